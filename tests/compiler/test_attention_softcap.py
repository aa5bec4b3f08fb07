"""Gemma 2's attention soft-cap rewrite (compiler/attention_softcap.py) on the real TVM kernels of the tiny
Gemma 2: every attention kernel the KV cache runs is capped exactly once, on both targets, nothing else
changes, and a kernel the rewrite does not understand is a BuildError. Numerical parity with llama.cpp
is tests/families/test_family_parity_gemma_phi3.py; WebGPU tokens, test_browser_webllm.py."""

from __future__ import annotations

import pytest

from build_pipeline.compiler import limits
from build_pipeline.compiler.attention_softcap import LOG2E, cap_attention_scores, count_capped_stores
from build_pipeline.compiler.library import compile_executable, cpu_target, webgpu_source, webgpu_target
from build_pipeline.compiler.module import LibrarySettings, export_ir, kv_cache_attention_kernels
from build_pipeline.compiler.profiles import PROFILES
from build_pipeline.errors import BuildError
from build_pipeline.families import get_family
from build_pipeline.quantization import get_scheme
from testing.tiny_families import PREFILL_CHUNK, hf_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FAMILY = get_family("gemma2")
CONFIG = FAMILY.config_from_hf(hf_config("gemma2"))
SETTINGS = LibrarySettings(128, PREFILL_CHUNK, "swiftshader")
# The kernels a model with sliding and global layers runs (the tree-attention ones are trimmed away).
ROLES = {"prefill-ragged", "prefill-paged", "decode-paged", "sliding-window-prefill", "sliding-window-decode"}


def _export(target):
    import tvm  # heavy (TVM)

    mod, _ = export_ir(FAMILY, CONFIG, get_scheme("q4f32_1"), target, SETTINGS)
    prims = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    return mod, prims


@pytest.mark.parametrize("target", ["llvm", "webgpu"])
def test_every_attention_kernel_is_capped_once_and_nothing_else(target):
    mod, prims = _export(cpu_target() if target == "llvm" else webgpu_target())
    kernels = kv_cache_attention_kernels(mod)
    assert set(kernels) == ROLES
    capped = {gv.name_hint for gv in kernels.values()}
    for name, func in prims.items():
        assert count_capped_stores(func) == (1 if name in capped else 0), name
        assert ("tanh" in str(func)) == (name in capped), name  # the final cap is still a relax op here


def test_a_kernel_without_a_known_score_store_is_a_build_error():
    """A kernel the rewrite does not recognise (here the state-merge kernel) fails the build, naming TVM."""
    mod, _ = _export(cpu_target())
    merge = next(gv for gv in mod.get_global_vars() if gv.name_hint.startswith("merge_state"))
    with pytest.raises(BuildError, match=r"expected one score store, found 0.*apache-tvm 0\.27"):
        cap_attention_scores(mod, {"merge": merge}, 2.0)


def test_webgpu_attention_kernels_carry_the_cap_in_wgsl():
    """The compiled WGSL (SwiftShader profile): the five attention kernels, and only they, scale by
    C = cap * log2(e)."""
    ex, _ = compile_executable(
        FAMILY, CONFIG, get_scheme("q4f32_1"), SETTINGS, PROFILES["swiftshader"], webgpu_target()
    )
    kernels = limits.split_kernels(webgpu_source(ex))
    c = f"{CONFIG.attn_logit_softcapping * LOG2E:e}f"  # WGSL float literal, e.g. 2.885390e+00f
    with_cap = sorted(name for name, src in kernels.items() if c in src)
    assert len(with_cap) == len(ROLES), with_cap
    assert all(name.startswith(("batch_prefill", "batch_decode")) for name in with_cap), with_cap
