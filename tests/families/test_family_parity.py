"""Every family against llama.cpp: a tiny random model of each, written as a GGUF, per-position logits.

The prompt (40 tokens) is longer than the prefill chunk (16), so chunked prefill through the paged KV
cache is exercised; Mistral's window (24) is shorter than the prompt. See llamacpp_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from testing.llamacpp_parity import PREFILL_CHUNK, PROMPT_TOKENS, run_parity

pytest.importorskip("llama_cpp")

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
WINDOW = 24


def _report(name, parity):
    print(f"\n{name}: {parity.summary()}")
    assert PROMPT_TOKENS > PREFILL_CHUNK and len(parity.lantern) == PROMPT_TOKENS


@pytest.mark.parametrize(
    "family,features",
    [
        ("llama", {}),
        ("llama", {"rope_scaling": LLAMA3_ROPE}),
        ("qwen2", {}),
        ("qwen3", {}),
    ],
    ids=["llama", "llama3-rope", "qwen2", "qwen3"],
)
def test_family_matches_llama_cpp(tmp_path, family, features):
    parity = run_parity(family, tmp_path, **features)
    _report(family + (" + llama3 rope" if features else ""), parity)
    assert parity.max_abs_diff <= parity.tolerance, parity.summary()
    assert parity.reference_diff <= parity.tolerance, parity.summary()
    assert (np.argmax(parity.lantern, -1) == np.argmax(parity.llama_cpp, -1)).all()
    if features.get("rope_scaling"):  # the scaling matters on this prompt: without it llama.cpp differs
        from testing.llamacpp_parity import llama_cpp_logits
        from testing.tiny_model import write_gguf

        plain = llama_cpp_logits(write_gguf(tmp_path / "plain.gguf", family=family), list(parity.ids))
        assert np.max(np.abs(plain - parity.llama_cpp)) > 10 * parity.tolerance


def test_llama3_rope_scaling_round_trips_through_rope_freqs(tmp_path):
    """The GGUF carries Llama-3 scaling only as `rope_freqs.weight` divisors: the importer recovers an
    equivalent rope_scaling (same frequencies), and without it llama.cpp's logits would differ."""
    from build_pipeline.families import get_family
    from build_pipeline.sources.gguf_file import open_gguf
    from testing.tiny_model import hf_config, write_gguf

    source = open_gguf(write_gguf(tmp_path / "l3.gguf", rope_scaling=LLAMA3_ROPE))
    imported = get_family("llama").config_from_hf(source.hf_config)
    original = get_family("llama").config_from_hf(hf_config(rope_scaling=LLAMA3_ROPE))
    assert imported.rope_scaling["rope_type"] == "llama3"
    assert np.allclose(imported.rope_inv_freq(), original.rope_inv_freq(), rtol=1e-6)
    plain = get_family("llama").config_from_hf(hf_config())
    assert not np.allclose(plain.rope_inv_freq(), original.rope_inv_freq(), rtol=1e-3)


def test_mistral_sliding_window(tmp_path):
    """Mistral = Llama + a sliding window. Its GGUF architecture is `llama`, where llama.cpp has no
    window, so llama.cpp is the yardstick only inside the window; past it the compiled model is
    compared with the numpy reference with the window applied (and shown to differ from no window)."""
    parity = run_parity("mistral", tmp_path, lantern_source="hf", sliding_window=WINDOW)
    _report("mistral", parity)
    inside = parity.per_position()[:WINDOW]
    assert inside.max() <= parity.tolerance, parity.summary()
    assert parity.reference_diff <= parity.tolerance, parity.summary()
    # Past the window llama.cpp (no window) disagrees: the window changes the model there.
    assert parity.per_position()[WINDOW:].max() > 10 * parity.tolerance, parity.summary()


def test_mistral_decode_slides_the_window(tmp_path):
    """web-llm's path: one prefill chunk, then one `decode` call per token well past the window."""
    from testing.llamacpp_parity import CONTEXT_WINDOW, lantern_build, prompt_ids
    from testing.tiny_model import write_hf_folder

    hf = write_hf_folder(tmp_path / "hf", family="mistral", sliding_window=WINDOW)
    compiled, reference = lantern_build(hf, "mistral", tmp_path / "lantern")
    prompt = prompt_ids(PREFILL_CHUNK)
    tokens, logits = compiled.greedy(prompt, 2 * WINDOW, CONTEXT_WINDOW)
    expected = reference.forward(prompt + tokens[:-1])[PREFILL_CHUNK - 1 :]
    diff = np.max(np.abs(expected - np.array(logits)), axis=-1)
    print(
        f"\nmistral decode: {len(tokens)} steps to position {PREFILL_CHUNK + len(tokens)} "
        f"(window {WINDOW}), max |dlogit| {diff.max():.2e}"
    )
    assert diff.max() <= 2e-3 * max(1.0, float(np.abs(expected).max()))


def test_mistral_chunk_larger_than_window_is_refused(tmp_path):
    """TVM's per-layer window masks paged attention only; inside a prefill chunk attention is plain causal.
    A chunk longer than the window would let tokens see past it, so the build refuses instead."""
    from build_pipeline.errors import BuildError
    from testing.llamacpp_parity import lantern_logits
    from testing.tiny_model import write_hf_folder

    hf = write_hf_folder(tmp_path / "hf", family="mistral", sliding_window=8)
    with pytest.raises(BuildError, match="sliding window 8"):
        lantern_logits(hf, "mistral", [5] * 4, tmp_path / "lantern", prefill_chunk=16)


def test_llama32_rope_freqs_recover_its_scaling():
    """Llama-3.2-1B's own numbers (head_dim 64, theta 500000, factor 32, 8192 -> 131072): the divisors
    llama.cpp's converter writes map back to the same frequencies."""
    from build_pipeline.families.llama.config import LlamaConfig
    from build_pipeline.sources.gguf_file import llama3_rope_scaling

    hf = {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "rope_theta": 500000.0,
        "max_position_embeddings": 131072,
    }
    scaling = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    scaled = LlamaConfig.from_hf({**hf, "rope_scaling": scaling}).rope_inv_freq()
    divisors = LlamaConfig.from_hf(hf).rope_inv_freq() / scaled
    recovered = llama3_rope_scaling(divisors.astype(np.float32).astype(np.float64), hf, "llama-3.2.gguf")
    assert np.allclose(LlamaConfig.from_hf({**hf, "rope_scaling": recovered}).rope_inv_freq(), scaled, rtol=1e-5)


def test_registry_maps_architectures_and_refuses_unknown_ones(tmp_path):
    """config.json and GGUF architecture names -> families; an unknown GGUF architecture is a BuildError."""
    from build_pipeline.errors import BuildError
    from build_pipeline.families import FAMILIES, family_of_gguf_arch, family_of_hf_config
    from build_pipeline.sources.gguf_file import open_gguf
    from testing.tiny_model import HF_ARCHITECTURES, hf_config, write_gguf

    for family, arch in HF_ARCHITECTURES.items():
        assert family_of_hf_config({"architectures": [arch]}) == family
        assert FAMILIES[family].config_from_hf(hf_config(family=family)).family == family
    assert family_of_gguf_arch("qwen3", "x.gguf").name == "qwen3"
    gguf = write_gguf(tmp_path / "t.gguf")
    data = gguf.read_bytes().replace(b"llama", b"gpt2!", 1)  # general.architecture is the first string value
    (tmp_path / "bad.gguf").write_bytes(data)
    with pytest.raises(BuildError, match="unknown architecture 'gpt2!' in GGUF file bad.gguf"):
        open_gguf(tmp_path / "bad.gguf")
