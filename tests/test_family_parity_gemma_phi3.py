"""Gemma 2, Gemma 3 and Phi-3 against llama.cpp: tiny random models written as GGUFs (tiny_families.py),
per-position logits over a 100-token prompt, longer than the prefill chunk (16) and the sliding
window (24). See llamacpp_parity.py for the harness.
"""

from __future__ import annotations

import numpy as np
import pytest

from llamacpp_parity import PREFILL_CHUNK, lantern_logits, llama_cpp_logits, prompt_ids, run_parity
from tiny_families import SLIDING_WINDOW, hf_config, write_gguf

from build_pipeline.errors import BuildError
from build_pipeline.families import get_family
from build_pipeline.sources.gguf_file import open_gguf

pytest.importorskip("llama_cpp")

PROMPT = 100
assert PROMPT > SLIDING_WINDOW > PREFILL_CHUNK


@pytest.mark.parametrize("family", ["gemma3", "phi3"])
def test_compiled_family_matches_llama_cpp(tmp_path, family):
    parity = run_parity(family, tmp_path, ids=prompt_ids(PROMPT))
    print(f"\n{family}: {parity.summary()}")
    assert parity.max_abs_diff <= parity.tolerance, parity.summary()
    assert parity.reference_diff <= parity.tolerance, parity.summary()
    assert (np.argmax(parity.lantern, -1) == np.argmax(parity.llama_cpp, -1)).all()


def _reference_logits(gguf, ids, **config_changes):
    """The numpy reference of a GGUF (float32 weights as imported), with config fields replaced."""
    import dataclasses

    source = open_gguf(gguf)
    family = get_family(source.hf_config["architectures"][0].removesuffix("ForCausalLM").lower())
    config = dataclasses.replace(family.config_from_hf(source.hf_config), **config_changes)
    params = {}
    for p in family.weight_map(config):
        parts = [source.load(s) for s in p.sources]
        params[p.name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return family.reference(config, params).forward(ids)


def test_gemma2_reference_matches_llama_cpp_and_the_compiler_refuses_it(tmp_path):
    """Gemma 2's attention soft-cap has no step in TVM's paged attention kernels: the numpy reference
    (imported GGUF) matches llama.cpp, the compiled build is refused with a BuildError naming the cap."""
    gguf = write_gguf(tmp_path / "g2.gguf", "gemma2")
    ids = prompt_ids(PROMPT)
    theirs, ours = llama_cpp_logits(gguf, ids), _reference_logits(gguf, ids)
    diff = float(np.abs(theirs - ours).max())
    tolerance = 2e-3 * max(1.0, float(np.abs(theirs).max()))
    print(f"\ngemma2 reference: max |dlogit| vs llama.cpp {diff:.2e} (tolerance {tolerance:.2e})")
    assert diff <= tolerance
    # Both caps matter on this model (they are small: 2 and 5), so the parity above checks them.
    for cap in ("attn_logit_softcapping", "final_logit_softcapping"):
        assert float(np.abs(theirs - _reference_logits(gguf, ids, **{cap: None})).max()) > 10 * tolerance, cap
    with pytest.raises(BuildError, match="soft-capping"):
        lantern_logits(gguf, "gemma2", ids[:4], tmp_path / "lantern")


def test_gemma3_window_and_local_rope_base_matter(tmp_path):
    """The prompt reaches past the window and the local/global rope bases differ: dropping either from
    the reference moves it far from llama.cpp (so the parity above exercises both)."""
    gguf = write_gguf(tmp_path / "g3.gguf", "gemma3")
    ids = prompt_ids(PROMPT)
    theirs = llama_cpp_logits(gguf, ids)
    tolerance = 2e-3 * max(1.0, float(np.abs(theirs).max()))
    no_window = _reference_logits(gguf, ids, sliding_window=10**6)
    assert np.abs(theirs - no_window)[:SLIDING_WINDOW].max() <= tolerance
    assert np.abs(theirs - no_window)[SLIDING_WINDOW:].max() > 10 * tolerance
    one_base = _reference_logits(gguf, ids, rope_local_base_freq=hf_config("gemma3")["rope_theta"])
    assert np.abs(theirs - one_base).max() > 10 * tolerance


def test_phi3_longrope_factors_and_attention_factor_matter(tmp_path):
    gguf = write_gguf(tmp_path / "p3.gguf", "phi3")
    ids = prompt_ids(PROMPT)
    theirs = llama_cpp_logits(gguf, ids)
    tolerance = 2e-3 * max(1.0, float(np.abs(theirs).max()))
    assert np.abs(theirs - _reference_logits(gguf, ids, rope_attention_scale=1.0)).max() > 10 * tolerance
    assert np.abs(theirs - _reference_logits(gguf, ids, rope_scaling=None)).max() > 10 * tolerance


def test_sliding_chunk_not_below_window_is_refused(tmp_path):
    """TVM's per-layer window does not mask inside a prefill chunk, and at chunk == window the last query
    of a chunk has no cached keys (NaN): the build refuses chunk >= window."""
    gguf = write_gguf(tmp_path / "g3.gguf", "gemma3")
    with pytest.raises(BuildError, match="sliding window"):
        lantern_logits(gguf, "gemma3", [5] * 4, tmp_path / "lantern", prefill_chunk=SLIDING_WINDOW)
