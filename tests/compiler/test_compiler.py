"""The compiler: real TVM compiles of the tiny random Llama (WebGPU library + CPU parity build).

The first run on a machine compiles and links the tiny library (~1 min, plus the wasm runtime if
test_wasm_runtime has not built it yet); after that everything comes from the compile cache.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from build_pipeline.compiler import limits
from build_pipeline.compiler.library import build_library, compile_executable, webgpu_source, webgpu_target
from build_pipeline.compiler.module import LibrarySettings
from build_pipeline.compiler.profiles import PROFILES, resolve_profiles
from build_pipeline.contract import VERIFY_FILE, library_file_name
from build_pipeline.errors import BuildError
from build_pipeline.families import get_family
from build_pipeline.manifest import read_manifest
from build_pipeline.quantization import get_scheme
from build_pipeline.tensor_cache import read_index
from testing.browser_harness.builds import build, tiny_spec
from testing.tiny_model import tiny_llama_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compiler")


@pytest.fixture(scope="session")
def tiny_q4f32(tiny_root) -> Path:
    """The tiny model's q4f32_1 variant, built by the real pipeline (library + verify.json)."""
    return build(tiny_spec(tiny_root), "q4f32_1", tiny_root / "out")


def _cpu_metadata(variant: Path) -> dict:
    from build_pipeline.compiler.verify import CompiledModel, cpu_library_for

    return CompiledModel(cpu_library_for(variant), variant).metadata


def test_variant_has_library_manifest_and_verify(tiny_q4f32):
    manifest = read_manifest(tiny_q4f32)
    lib, soft = manifest.library, manifest.software_library
    # auto: the default library is scheduled for real GPUs; f32 variants, which software adapters
    # run, also carry a SwiftShader-friendly one.
    assert lib["file"] == library_file_name("tiny-llama", "q4f32_1", "gpu") and lib["profile"] == "gpu"
    assert soft["file"] == library_file_name("tiny-llama", "q4f32_1", "swiftshader")
    assert soft["profile"] == "swiftshader"
    files = {f["path"]: f["bytes"] for f in manifest.files}
    for entry in (lib, soft):
        assert (tiny_q4f32 / entry["file"]).read_bytes()[:4] == b"\0asm"
        assert entry["file"] in files  # hashed into the manifest
    # A browser fetches one of the two libraries: the download size counts the default one.
    assert manifest.download_bytes == sum(files.values()) - files[soft["file"]]
    assert lib["max_storage_buffers"] <= 10 and lib["max_invocations"] <= 256
    assert lib["max_workgroup_storage_bytes"] <= 32768
    report = json.loads((tiny_q4f32 / VERIFY_FILE).read_text())
    assert report["passed"] and lib["verify"]["passed"]
    assert report["argmax_agreement"] == f"{len(report['steps'])}/{len(report['steps'])}"
    assert report["max_rel_diff"] < 1e-4
    # The fixed prompt is longer than prefill_chunk_size (64): chunked prefill was exercised.
    assert len(report["prompt_token_ids"]) > 64
    assert len(report["raw_greedy_token_ids"]) == 16


def test_metadata_matches_tensor_cache(tiny_q4f32):
    meta = _cpu_metadata(tiny_q4f32)
    records = [r for shard in read_index(tiny_q4f32)["records"] for r in shard["records"]]
    assert [(p["name"], p["shape"], p["dtype"]) for p in meta["params"]] == [
        (r["name"], r["shape"], r["dtype"]) for r in records
    ]
    assert meta["prefill_chunk_size"] == 64 and meta["context_window_size"] == 256
    assert meta["kv_state_kind"] == "kv_cache" and meta["sliding_window_size"] == -1
    assert meta["model_type"] == "llama" and meta["quantization"] == "q4f32_1"
    assert set(meta["memory_usage"]) == {"embed", "prefill", "decode"}
    # web-llm's model package: the manifest beside the weights and the library's `artifact` agree,
    # and the library declares the same device needs the site's manifest shows.
    manifest = read_manifest(tiny_q4f32)
    package = json.loads((tiny_q4f32 / manifest.package_manifest).read_text())
    artifact = meta["artifact"]
    assert artifact["interface_id"] == package["interface_id"]
    assert artifact["parameter_schema_id"] == package["weights"]["parameter_schema_id"]
    assert package["tasks"]["chat.completions"]["executor"] in artifact["programs"]
    assert artifact["resources"] == {
        "required_features": manifest.required_features,
        "max_storage_buffer_binding_size": manifest.required_limits["maxStorageBufferBindingSize"],
        "estimated_device_memory_bytes": manifest.estimated_gpu_memory_bytes,
    }
    assert manifest.package_manifest in {f["path"] for f in manifest.files}


def test_webgpu_library_interface_and_kernels(tiny_q4f32):
    """The library links against web-llm's runtime, and every kernel fits SwiftShader's limits."""
    from build_pipeline.compiler.wasm_runtime import check_interface

    manifest = read_manifest(tiny_q4f32)
    check_interface(tiny_q4f32 / manifest.library["file"])
    lib = manifest.software_library
    check_interface(tiny_q4f32 / lib["file"])
    from build_pipeline.compiler import cache

    info = json.loads((cache.libs_root() / lib["cache_key"] / cache.INFO_FILE).read_text())
    names = {k["name"] for k in info["kernel_stats"]}
    # No unused KV-cache kernels (tree / sliding-window attention) get compiled by every page load.
    assert not any("tree" in n or "sliding_window" in n for n in names), names
    for k in info["kernel_stats"]:
        assert not k["uses_f16"]
        assert k["lines"] <= PROFILES["swiftshader"].limits.max_wgsl_lines


def test_decode_linears_are_single_fused_kernels_without_transposes():
    """q4 linears compile to one kernel each (dequantize fused in), no transposes, f32 logits."""
    scheme = get_scheme("q4f32_1")
    prof = PROFILES["swiftshader"]
    ex, _ = compile_executable(
        get_family("llama"), tiny_llama_config(), scheme, LibrarySettings(256, 64, prof.name), prof, webgpu_target()
    )
    kernels = limits.split_kernels(webgpu_source(ex))
    assert not [n for n in kernels if "transpose" in n and "kv_cache" not in n]
    assert not [n for n in kernels if n.startswith("dequantize")]
    decode_linears = [n for n in kernels if ("linear" in n or "lm_head" in n)]
    assert decode_linears
    for name in decode_linears:
        assert "var<workgroup>" not in kernels[name]  # swiftshader profile: register-only linears
        assert not re.search(r"var<storage[^;]*dequantize", kernels[name])  # no materialised weight


def test_f16_variant_uses_shader_f16_and_fits_gpu_limits():
    scheme = get_scheme("q4f16_1")
    prof = resolve_profiles(None, scheme)[0]
    assert prof.name == "gpu"  # f16 needs shader-f16, i.e. a real GPU: no software library
    assert [p.name for p in resolve_profiles(None, scheme)] == ["gpu"]
    ex, meta = compile_executable(
        get_family("llama"), tiny_llama_config(), scheme, LibrarySettings(256, 64, prof.name), prof, webgpu_target()
    )
    src = webgpu_source(ex)
    assert "enable f16;" in src
    # dlight's Matmul/GEMV keep the dequantized tile in registers/workgroup memory, never in a buffer.
    assert not re.search(r"var<storage[^;]*dequantize", src)
    stats = limits.analyze(src)
    limits.check(stats, prof.limits, prof.name, allow_f16=True)
    assert {p["dtype"] for p in meta["params"]} == {"uint32", "float16"}
    with pytest.raises(BuildError, match="shader-f16"):
        limits.check(stats, prof.limits, prof.name, allow_f16=False)


def test_limit_violation_is_a_clear_build_error():
    stats = [limits.KernelStats("big_kernel", 10, 12, 40000, 1024, False)]
    with pytest.raises(BuildError) as err:
        limits.check(stats, PROFILES["swiftshader"].limits, "swiftshader", allow_f16=False)
    msg = str(err.value)
    assert "big_kernel" in msg and "12 storage buffers" in msg and "40000 bytes of workgroup memory" in msg
    assert "1024 invocations" in msg


def test_kernel_over_device_limits_fails_the_build_and_leaves_nothing(tiny_root, monkeypatch, tmp_path):
    """A profile whose device allows 8 storage buffers (WebGPU's default) rejects the attention
    kernels (9-10 buffers): BuildError naming the kernel, no variant dir, no cache entry."""
    from dataclasses import replace

    from build_pipeline.compiler import profiles

    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "cache"))
    strict = replace(profiles.PROFILES["swiftshader"], limits=profiles.Limits(max_storage_buffers=8))
    monkeypatch.setitem(profiles.PROFILES, "swiftshader", strict)
    out = tmp_path / "out"
    with pytest.raises(BuildError, match=r"kernel \w+ binds (9|10) storage buffers"):
        build(tiny_spec(tiny_root / "strict"), "q4f32_1", out, profile="swiftshader")
    assert not (out / "tiny-llama" / "q4f32_1").exists()
    assert not list((tmp_path / "cache" / "model-libs").glob("*/model.wasm"))


def test_emcc_missing_is_a_clear_build_error(tiny_root, monkeypatch, tmp_path):
    from build_pipeline.compiler import library

    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "cache"))  # nothing cached: must link
    real_which = shutil.which
    monkeypatch.setattr(
        library.shutil, "which", lambda name, *a, **k: None if name == "emcc" else real_which(name, *a, **k)
    )
    out = tmp_path / "out"
    with pytest.raises(BuildError, match="emcc"):
        build(tiny_spec(tiny_root / "noemcc"), "q4f32_1", out)
    assert not (out / "tiny-llama").exists() or not any((out / "tiny-llama").iterdir())


def test_unknown_profile_is_a_clear_build_error():
    with pytest.raises(BuildError, match="unknown build profile 'tpu'"):
        resolve_profiles("tpu", get_scheme("q4f32_1"))


def test_family_without_model_definition_is_a_clear_build_error():
    import dataclasses

    from build_pipeline.compiler.module import export_ir

    fake = dataclasses.replace(get_family("llama"), name="gpt2", model_module="build_pipeline.families.gpt2.model")
    with pytest.raises(BuildError, match="no compiler model definition"):
        export_ir(fake, tiny_llama_config(), get_scheme("q4f32_1"), webgpu_target(), LibrarySettings(256, 64, "gpu"))


def test_rebuild_is_served_from_the_cache(tiny_root, tiny_q4f32):
    spec = tiny_spec(tiny_root)
    start = time.monotonic()
    again = build(spec, "q4f32_1", tiny_root / "out2")
    warm = time.monotonic() - start
    lib = read_manifest(again).library
    report = json.loads((again / VERIFY_FILE).read_text())
    assert lib["from_cache"] and lib["verify"]["reused"] and report["passed"]
    assert report["reused"]["verification_key"] == json.loads((tiny_q4f32 / VERIFY_FILE).read_text()).get(
        "verification_key", report["reused"]["verification_key"]
    )
    assert (again / lib["file"]).read_bytes() == (tiny_q4f32 / lib["file"]).read_bytes()
    assert warm < 30, f"warm rebuild took {warm:.1f} s"
    from build_pipeline.compiler import cache

    assert not list(cache.libs_root().glob(".*.tmp-*")), "a half-written cache entry was left behind"


def test_cache_key_covers_what_changes_the_library():
    from build_pipeline.compiler import cache

    cfg = tiny_llama_config().to_dict()
    base = LibrarySettings(256, 64, "swiftshader").to_dict()
    key = cache.library_key("webgpu", cfg, "q4f32_1", base, 1)[0]
    assert key == cache.library_key("webgpu", dict(cfg), "q4f32_1", dict(base), 1)[0]
    variants = [
        cache.library_key("webgpu", {**cfg, "rope_theta": 500.0}, "q4f32_1", base, 1),
        cache.library_key("webgpu", cfg, "q4f16_1", base, 1),
        cache.library_key("webgpu", cfg, "q4f32_1", {**base, "profile": "gpu"}, 1),
        cache.library_key("webgpu", cfg, "q4f32_1", {**base, "prefill_chunk_size": 32}, 1),
        cache.library_key("webgpu", cfg, "q4f32_1", {**base, "context_window": 512}, 1),
        cache.library_key("webgpu", cfg, "q4f32_1", base, 2),
        cache.library_key("llvm", cfg, "q4f32_1", base, 1),
    ]
    assert len({key, *(k for k, _ in variants)}) == len(variants) + 1
    assert "compiler" in variants[0][1] and "apache-tvm" in variants[0][1]["toolchain"]


@pytest.mark.parametrize(
    "quant,qkv_bias,tie", [("q4f16_1", False, True), ("q0f32", False, False), ("q4f32_1", True, True)]
)
def test_cpu_parity_other_variants(tiny_root, quant, qkv_bias, tie):
    """f16 activations, unquantized weights + separate lm_head, Qwen2's q/k/v bias: the compiled model
    (CPU build of the same definition) matches the numpy reference through the paged KV cache."""
    from build_pipeline.build import load_model
    from build_pipeline.compiler.verify import judge, run_parity

    model_id = f"tiny-{quant.replace('_', '')}-{'bias' if qkv_bias else 'nobias'}-{'tied' if tie else 'head'}"
    spec = tiny_spec(tiny_root / model_id, quantizations=(quant,), qkv_bias=qkv_bias, tie=tie, model_id=model_id)
    variant = build(spec, quant, tiny_root / "cpu-only", compile_library=False)
    model = load_model(spec)
    scheme = get_scheme(quant)
    prof = resolve_profiles(None, scheme)[0]
    settings = LibrarySettings(spec.context_window, spec.prefill_chunk_size, prof.name)
    lib, _, _ = build_library(model.family, model.config, scheme, settings, prof, "llvm")
    report = judge(run_parity(model, scheme, variant, lib, settings.context_window, max_new_tokens=8))
    assert report["passed"], report["summary"]
    assert report["argmax_agreement"] == "8/8"


def test_logit_functions_semantics():
    """softmax_with_temperature / argsort_probs / sample_with_top_p / penalty / bias / bitmask, as
    web-llm calls them (CPU build of the same TIR kernels the WebGPU library gets)."""
    import tvm
    from tvm import relax

    from build_pipeline.compiler.logits import attach_logit_functions

    vocab = 1000
    ex = tvm.compile(attach_logit_functions(tvm.IRModule(), vocab, gpu=False), target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    kernel = lambda name: vm.module.get_function(name, query_imports=True)  # noqa: E731
    t = lambda a: tvm.runtime.tensor(np.asarray(a))  # noqa: E731
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((1, 1, vocab)) * 3).astype("float32")
    top = logits.max()
    logits[0, 0, [5, 7]] = top  # a three-way tie for the maximum

    greedy = vm["softmax_with_temperature"](t(logits), t(np.array([1e-6], "float32"))).numpy()[0, 0]
    winners = np.flatnonzero(greedy)
    assert set(winners) == set(np.flatnonzero(logits[0, 0] == top)) and np.allclose(greedy[winners], 1 / 3)

    probs = vm["softmax_with_temperature"](t(logits), t(np.array([0.7], "float32"))).numpy().reshape(1, vocab)
    ref = np.exp((logits[0, 0] - top) / 0.7)
    np.testing.assert_allclose(probs[0], ref / ref.sum(), rtol=1e-5, atol=1e-7)

    sorted_probs, sorted_idx = (x.numpy() for x in vm["argsort_probs"](t(probs)))
    order = sorted(range(vocab), key=lambda i: (-probs[0, i], i))
    assert sorted_idx[0].tolist() == order and np.array_equal(sorted_probs[0], probs[0, order])

    sp, si = vm["argsort_probs"](t(probs))
    cum = np.cumsum(sorted_probs[0].astype(np.float64))
    for u, top_p in ((0.0, 0.9), (0.5, 0.9), (0.999, 0.5), (0.3, 1.0)):
        got = vm["sample_with_top_p"](
            sp, si, t(np.array([u], "float32")), t(np.array([0], "int32")), t(np.array([top_p], "float32"))
        ).numpy()
        mass = cum[int(np.argmax(cum >= top_p))]
        assert got.tolist() == [int(sorted_idx[0, int(np.argmax(cum > u * mass))])]
    one_hot = np.zeros((1, vocab), "float32")
    one_hot[0, 123] = 1
    sp1, si1 = vm["argsort_probs"](t(one_hot))
    assert vm["sample_with_top_p"](
        sp1, si1, t(np.array([0.77], "float32")), t(np.array([0], "int32")), t(np.array([1e-5], "float32"))
    ).numpy().tolist() == [123]

    base = logits.reshape(1, vocab).copy()
    arr = t(base.copy())
    kernel("apply_penalty_inplace")(
        arr,
        t(np.array([0], "int32")),
        t(np.array([0, 0], "int32")),
        t(np.array([3, 9], "int32")),
        t(np.array([1, 2], "int32")),
        t(np.array([[0.5, 0.25, 1.3]], "float32")),
    )
    out = arr.numpy()
    for tok, cnt in ((3, 1), (9, 2)):
        v = base[0, tok] - (0.5 + cnt * 0.25)
        assert out[0, tok] == pytest.approx(v * 1.3 if v < 0 else v / 1.3, rel=1e-6)
    assert np.array_equal(np.delete(out, [3, 9], axis=1), np.delete(base, [3, 9], axis=1))

    arr = t(base.copy())
    kernel("apply_logit_bias_inplace")(
        arr, t(np.array([0], "int32")), t(np.array([11], "int32")), t(np.array([2.5], "float32"))
    )
    assert arr.numpy()[0, 11] == pytest.approx(base[0, 11] + 2.5)

    mask = np.zeros((1, (vocab + 31) // 32), "int32")
    mask[0, 0] = 0b1010  # allow tokens 1 and 3 only
    arr = t(base.copy())
    kernel("apply_bitmask_inplace")(arr, t(np.array([0], "int32")), t(mask))
    out = arr.numpy()[0]
    assert out[1] == base[0, 1] and out[3] == base[0, 3]
    assert (np.delete(out, [1, 3]) == np.finfo(np.float32).min).all()


@pytest.mark.parametrize(
    "scaling",
    [
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        {"type": "linear", "factor": 2.0},
    ],
)
def test_cpu_parity_rope_scaling(tiny_root, scaling):
    """Llama-3 and linear RoPE scaling in the paged KV cache's RoPE kernel == reference.py's."""
    from build_pipeline.build import load_model
    from build_pipeline.compiler.verify import judge, run_parity

    kind = scaling.get("rope_type") or scaling["type"]
    model_id = f"tiny-rope-{kind}"
    spec = tiny_spec(tiny_root / model_id, model_id=model_id)
    hf_cfg = spec.source.path and Path(spec.source.path) / "config.json"
    cfg = json.loads(hf_cfg.read_text())
    cfg["rope_scaling"] = scaling
    hf_cfg.write_text(json.dumps(cfg))
    model = load_model(spec)
    assert model.config.rope_scaling == scaling
    variant = build(spec, "q4f32_1", tiny_root / "rope", compile_library=False)
    scheme = get_scheme("q4f32_1")
    prof = resolve_profiles(None, scheme)[0]
    settings = LibrarySettings(spec.context_window, spec.prefill_chunk_size, prof.name)
    lib, _, _ = build_library(model.family, model.config, scheme, settings, prof, "llvm")
    report = judge(run_parity(model, scheme, variant, lib, settings.context_window, max_new_tokens=8))
    assert report["passed"], report["summary"]
    # The prompt (76 tokens) runs past original_max_position_embeddings / high_freq_factor, so the
    # scaled frequencies matter: without scaling the reference would differ.
    plain = judge(
        run_parity(
            load_model(tiny_spec(tiny_root / f"{model_id}-plain", model_id=model_id)),
            scheme,
            variant,
            lib,
            settings.context_window,
            max_new_tokens=8,
        )
    )
    assert not plain["passed"]
