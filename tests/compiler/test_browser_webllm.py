"""Issue item 7: built variants run in headless Chromium (SwiftShader WebGPU) through STOCK web-llm
0.2.86, and greedy decoding reproduces the CPU build's tokens exactly (verify.json).

Two paths are checked: the public chat API (conv template + tokenizer + sampling functions at
temperature 0; token ids read from the pipeline) and web-llm's low-level forwardTokensAndSample on
the verified prompt ids (16 raw greedy steps, stop tokens included).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from build_pipeline.contract import PACKAGE_MANIFEST_FILE, VERIFY_FILE
from testing.browser_harness.builds import build, smollm2_spec, tiny_spec
from testing.browser_harness.server import HarnessServer, find_webllm, harness_page, load_variant
from testing.chromium import CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (make install-test)"),
    pytest.mark.skipif(find_webllm() is None, reason="web-llm bundle missing (make install)"),
]


def _cpu_penalized_greedy(
    variant: Path, prompt: str, steps: int, repetition_penalty: float, presence_penalty: float, frequency_penalty: float
) -> list[int]:
    """web-llm's penalised greedy decoding replayed on the verified CPU build (penalties apply to the
    tokens generated so far: l -= presence + count * frequency; l = l < 0 ? l * rep : l / rep)."""
    import numpy as np

    from build_pipeline.compiler.verify import CompiledModel, cpu_library_for, prompt_token_ids

    ids, chat, _ = prompt_token_ids(variant, prompt)
    stop = set(chat["conv_template"]["stop_token_ids"])
    model = CompiledModel(cpu_library_for(variant), variant)
    model.reset(chat["context_window_size"])
    logits, out, counts = model.prefill(ids), [], {}
    f32 = np.float32
    while len(out) < steps:
        adjusted = logits.astype(np.float32).copy()
        for tok, cnt in counts.items():
            v = adjusted[tok] - (f32(presence_penalty) + f32(cnt) * f32(frequency_penalty))
            adjusted[tok] = v * f32(repetition_penalty) if v < 0 else v / f32(repetition_penalty)
        nxt = int(np.argmax(adjusted))
        if nxt in stop:
            break
        out.append(nxt)
        counts[nxt] = counts.get(nxt, 0) + 1
        logits = model.forward([nxt])
    return out


def _check_against_verify(page, name: str, variant: Path, raw: bool = True) -> dict:
    report = json.loads((variant / VERIFY_FILE).read_text())
    assert report["passed"]
    chat = page.evaluate("a => window.lantern.chat(a)", {"prompt": report["prompt"], "maxTokens": 16, "model": name})
    assert chat["usage"]["prompt_tokens"] == len(report["prompt_token_ids"])
    assert chat["outputIds"] == report["greedy_token_ids"], (chat, report["greedy_text"])
    assert chat["finishReason"] == report["finish_reason"]
    assert chat["text"] == report["greedy_text"]
    if not raw:
        return chat
    raw = page.evaluate(
        "a => window.lantern.forwardIds(a)",
        {"ids": report["prompt_token_ids"], "steps": len(report["raw_greedy_token_ids"]), "model": name},
    )
    assert raw == report["raw_greedy_token_ids"]
    return chat


TINY_FAMILIES = {
    # Llama-3.2-1B's attention layout (8 query heads on 2 KV heads, head_dim 64) with Llama-3 RoPE scaling:
    # * TVM's TIR CSE breaks the prefill kernels of Llama-3 RoPE (compiler/library.py compiles again
    #   without that pass);
    # * the 76-token prompt runs in two prefill chunks, so the second merges its attention with the cached
    #   tokens': TVM's merge kernel raced on the log-sum-exp and gave wrong tokens on SwiftShader from
    #   head_dim 32 on (compiler/attention_merge.py replaces it).
    "llama": {
        "hf_extra": {
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        }
    },
    "qwen2": {"qkv_bias": True, "tie": False},
    # A window (24) shorter than the verification prompt + answer, chunks that fit in it: the compiled
    # per-layer window (TVM mha_sliding layers) runs in stock web-llm with sliding_window_size = -1.
    "mistral": {"family": "mistral", "hf_extra": {"sliding_window": 24}, "prefill_chunk_size": 16},
}


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_tiny_model_greedy_tokens_match_cpu_build(tmp_path, family, _browsers):
    """Tiny Llama (tied embeddings, Llama-3 RoPE, Llama-3.2-1B's 8 query / 2 KV heads at head_dim 64, a
    prompt in two prefill chunks), Qwen2 (q/k/v bias, separate lm_head), Mistral (sliding window), q4f32_1.
    Only the library SwiftShader runs is built (the swiftshader profile); the gpu profile's kernels run in
    the gpu-profile, Gemma 2 and GGUF-format tests below."""
    spec = tiny_spec(tmp_path, model_id=f"tiny-{family}", **TINY_FAMILIES[family])
    variant = build(spec, "q4f32_1", tmp_path / "out", profile="swiftshader")
    with HarnessServer() as server, harness_page(server, _browsers(True), timeout_ms=600_000) as page:
        gpu = page.evaluate("window.lantern.gpuInfo()")
        assert gpu["ok"] and "shader-f16" not in gpu["features"], gpu
        loaded = load_variant(page, server, "tiny", variant, library="library")
        chat = _check_against_verify(page, "tiny", variant)
        report = json.loads((variant / VERIFY_FILE).read_text())
        # logit_bias runs apply_logit_bias_inplace on the GPU: a +100 bias makes greedy pick that token.
        biased = page.evaluate(
            "a => window.lantern.chat(a)",
            {"prompt": report["prompt"], "maxTokens": 4, "model": "tiny", "extra": {"logit_bias": {"70": 100}}},
        )
        assert biased["outputIds"] == [70] * 4, biased
        # Penalties run apply_penalty_inplace; the CPU build + the same penalty rule in numpy must agree.
        penalty = {"repetition_penalty": 1.5, "presence_penalty": 1.0, "frequency_penalty": 0.5}
        penalized = page.evaluate(
            "a => window.lantern.chat(a)",
            {"prompt": report["prompt"], "maxTokens": 12, "model": "tiny", "extra": penalty},
        )
        expected = _cpu_penalized_greedy(variant, report["prompt"], 12, **penalty)
        assert penalized["outputIds"] == expected
        print(
            f"\ntiny {family} q4f32_1: load {loaded['loadMs'] / 1000:.1f} s, {len(chat['outputIds'])} tokens, "
            f"decode {chat['usage']['extra']['decode_tokens_per_s']:.1f} tok/s"
        )


def test_tiny_gemma2_soft_caps_and_mixed_windows_match_cpu_build(tmp_path, _browsers):
    """Tiny Gemma 2, q4f32_1: attention soft-cap 2 in the WGSL attention kernels, final-logit cap 5,
    alternating sliding (24) and global layers, chunks of 16. Both libraries reproduce the CPU build's
    greedy tokens (verified against the numpy reference) in stock web-llm. The 76-token prompt runs every
    capped kernel (ragged and paged prefill, decode, their sliding-window pairs) and passes the window,
    which needs the runtime's per-layer sliding-window fix (wasm_runtime._AUX_PATCHES): without it the
    global layers see only the window and the tokens differ (with or without the caps)."""
    from testing.browser_harness.builds import tiny_family_gguf_spec
    from testing.tiny_families import PREFILL_CHUNK

    spec = tiny_family_gguf_spec(tmp_path, "gemma2", prefill_chunk_size=PREFILL_CHUNK)
    variant = build(spec, "q4f32_1", tmp_path / "out")
    for name, library in (("tiny-gemma2", "software_library"), ("tiny-gemma2-gpu", "library")):
        with HarnessServer() as server, harness_page(server, _browsers(True), timeout_ms=600_000) as page:
            load_variant(page, server, name, variant, library=library)
            _check_against_verify(page, name, variant)


def test_tiny_quantized_gguf_asym_matches_cpu_build(tmp_path, _browsers):
    """q4f32_asym from a GGUF with Q8_0/Q4_0/Q4_1/Q5_0 tensors: every new weight format's WGSL kernels
    (both libraries) reproduce the CPU build's greedy tokens in stock web-llm."""
    from testing.browser_harness.builds import tiny_quantized_gguf_spec

    variant = build(tiny_quantized_gguf_spec(tmp_path, eval_tokens=1024), "q4f32_asym", tmp_path / "out")
    with HarnessServer() as server, harness_page(server, _browsers(True), timeout_ms=600_000) as page:
        load_variant(page, server, "tiny-q", variant)
        _check_against_verify(page, "tiny-q", variant)
    with HarnessServer() as server, harness_page(server, _browsers(True), timeout_ms=600_000) as page:
        load_variant(page, server, "tiny-q-gpu", variant, library="library")
        _check_against_verify(page, "tiny-q-gpu", variant)


@pytest.fixture(scope="module")
def tiny_q4f32(tmp_path_factory) -> Path:
    """The tiny Llama as q4f32_1 with both libraries, built once for the tests that only read it."""
    tmp = tmp_path_factory.mktemp("tiny-q4f32")
    return build(tiny_spec(tmp), "q4f32_1", tmp / "out")


def test_tiny_model_gpu_profile_library_matches_cpu_build(tiny_q4f32, _browsers):
    """The default library (dlight's tiled kernels, for real GPUs) computes the same tokens; SwiftShader
    runs it slowly but correctly, so CI checks its kernels too."""
    variant = tiny_q4f32
    with HarnessServer() as server, harness_page(server, _browsers(True), timeout_ms=600_000) as page:
        load_variant(page, server, "tiny-gpu", variant, library="library")
        _check_against_verify(page, "tiny-gpu", variant)


def test_tiny_model_through_the_model_package_matches_cpu_build(tmp_path, tiny_q4f32, _browsers):
    """web-llm's model-package path: it checks the package manifest against the library's
    `_metadata.artifact` (interface, parameter schema, device needs), then chats by role."""
    variant = tiny_q4f32
    with HarnessServer() as server, harness_page(server, _browsers(True), timeout_ms=600_000) as page:
        load_variant(page, server, "tiny-package", variant, package=True)
        _check_against_verify(page, "tiny-package", variant, raw=False)

        # The check is real: weights that are not the library's are refused before anything loads.
        other = tmp_path / "mismatched"
        shutil.copytree(variant, other)
        package = json.loads((other / PACKAGE_MANIFEST_FILE).read_text())
        package["weights"]["parameter_schema_id"] = "sha256:" + "0" * 64
        (other / PACKAGE_MANIFEST_FILE).write_text(json.dumps(package))
        with pytest.raises(Exception, match="parameter schema IDs differ"):
            load_variant(page, server, "tiny-mismatched", other, package=True)


@pytest.mark.slow
def test_smollm2_q4f32_answers_match_cpu_build(tmp_path_factory, _browsers):
    """SmolLM2-135M q4f32_asym, the default f32 build (swiftshader profile): >= 16 greedy tokens equal the
    CPU build's, the France answer is "Paris" (the GGUF's weights imported losslessly), and the answer
    to a second factual prompt is printed."""
    from build_pipeline.compiler.verify import cpu_chat

    out = tmp_path_factory.mktemp("smollm2")
    start = time.monotonic()
    variant = build(smollm2_spec(), "q4f32_asym", out)
    built = time.monotonic() - start
    answers = {}
    with HarnessServer() as server, harness_page(server, _browsers(True), timeout_ms=1_800_000) as page:
        loaded = load_variant(page, server, "smollm2", variant)
        answers["What is the capital of France?"] = _check_against_verify(page, "smollm2", variant)
        assert "Paris" in answers["What is the capital of France?"]["text"]
        question = "What is the capital of Germany?"
        cpu = cpu_chat(variant, question, max_new_tokens=16)
        chat = page.evaluate("a => window.lantern.chat(a)", {"prompt": question, "maxTokens": 16, "model": "smollm2"})
        assert chat["outputIds"] == cpu["token_ids"] and chat["text"] == cpu["text"]
        answers[question] = chat
    print(f"\nSmolLM2-135M q4f32_asym: build {built:.0f} s, load {loaded['loadMs'] / 1000:.1f} s")
    for q, a in answers.items():
        extra = a["usage"]["extra"]
        print(
            f"  {q} -> {a['text']!r} ({len(a['outputIds'])} tokens, prefill "
            f"{extra['prefill_tokens_per_s']:.2f} tok/s, decode {extra['decode_tokens_per_s']:.2f} tok/s)"
        )
