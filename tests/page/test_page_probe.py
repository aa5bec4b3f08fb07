"""The per-device answer check (issue 21, item 3): on the first load of a build on an adapter, the page
asks the GPU for a short greedy answer and compares it with the verified CPU build's tokens (the manifest's
`probe`, build_pipeline/probe.py). A build whose weights were altered after verification (hashes updated,
so every download check passes: exactly what a GPU computing wrong numbers looks like to the page) is
caught there, said so plainly, never used on that adapter again, and the page moves to the next rung.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from build_pipeline.contract import MANIFEST_FILE, TENSOR_CACHE_FILE

pytestmark = pytest.mark.browser

LOAD_TIMEOUT = 600_000  # SwiftShader compiles every WGSL kernel at load


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def perturb_final_norm(variant: Path) -> None:
    """Negate the final norm's weights (every logit changes sign: the greedy answer becomes another) and
    update tensor-cache.json and the manifest so that every hash matches the altered files."""
    index_path = variant / TENSOR_CACHE_FILE
    index = json.loads(index_path.read_text())
    shard, rec = next(
        (s, r)
        for s in index["records"]
        for r in s["records"]
        if r["name"].endswith("norm.weight") and "layers" not in r["name"]
    )
    path = variant / shard["dataPath"]
    data = bytearray(path.read_bytes())
    weights = np.frombuffer(bytes(data[rec["byteOffset"] : rec["byteOffset"] + rec["nbytes"]]), dtype=rec["dtype"])
    data[rec["byteOffset"] : rec["byteOffset"] + rec["nbytes"]] = (-weights).astype(rec["dtype"]).tobytes()
    path.write_bytes(bytes(data))
    shard["sha256"] = _sha256(path)
    shard["md5sum"] = hashlib.md5(bytes(data)).hexdigest()  # web-llm's own field, not security
    index_path.write_text(json.dumps(index))
    manifest_path = variant / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["files"]:
        if entry["path"] in (shard["dataPath"], TENSOR_CACHE_FILE):
            entry["sha256"] = _sha256(variant / entry["path"])
            entry["bytes"] = (variant / entry["path"]).stat().st_size
    manifest_path.write_text(json.dumps(manifest, indent=1))


JUDGE = """async ([probe, cases]) => {
  const { judgeProbe } = await import('/static/js/probe.js');
  return cases.map((c) => judgeProbe(probe, c));
}"""


def _entry(token, logprob=-0.1, alts=()):
    return {"token": token, "logprob": logprob, "top_logprobs": [{"token": t, "logprob": lp} for t, lp in alts]}


def test_the_rule_the_page_applies(serve, chromium, tiny_site_models):
    """judgeProbe on made-up engine answers: exact tokens pass, a near tie may flip (and ends the check),
    anything else, or a missing or extra stop, is a wrong answer."""
    server = serve(tiny_site_models)
    s = chromium(webgpu=False, tier=None)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download", "unsupported")
    words = ["The", " capital", " is", " Paris"]
    probe = {
        "expected_text": "The capital is Paris",
        "tokens": [{"text": w, "stop": False, "tie": i == 2, "tolerance": 0.1} for i, w in enumerate(words)]
        + [{"text": "<|im_end|>", "stop": True, "tie": False, "tolerance": 0.1}],
    }

    def choice(entries, finish="stop"):
        return {"finish_reason": finish, "logprobs": {"content": entries}}

    same = [_entry(w) for w in words] + [_entry("")]
    tie_flip = [_entry(w) for w in words[:2]] + [_entry(" was", -0.50, [(" was", -0.50), (" is", -0.55)])]
    far_flip = [_entry(w) for w in words[:2]] + [_entry(" was", -0.1, [(" was", -0.1), (" is", -3.0)])]
    garbage = [_entry("pc", -0.1, [("pc", -0.1), ("x", -0.2)])]
    no_stop = [_entry(w) for w in words] + [_entry(".")]
    early_stop = [_entry(w) for w in words[:1]] + [_entry("")]
    out = s.page.evaluate(
        JUDGE,
        [
            probe,
            [
                choice(same),
                choice(tie_flip, "length"),
                choice(far_flip, "length"),
                choice(garbage, "length"),
                choice(no_stop, "length"),
                choice(early_stop),
            ],
        ],
    )
    assert [r["ok"] for r in out] == [True, True, False, False, False, False], out
    assert out[0]["checked"] == 5 and not out[0]["endedAtTie"]
    assert out[1]["endedAtTie"] and out[1]["checked"] == 2
    assert [r.get("at") for r in out[2:]] == [2, 0, 4, 1]


def test_a_gpu_build_computing_wrong_answers_is_caught_and_the_page_falls_back(
    serve, chromium, tiny_chat_models, tmp_path
):
    from testing.fixtures import copy_models

    models = copy_models(tiny_chat_models, tmp_path / "models")
    variant = next(p.parent for p in models.glob("*/q4f32_1/" + MANIFEST_FILE))
    perturb_final_norm(variant)
    server = serve(models)
    s = chromium(webgpu=True)  # Settings: GPU; SwiftShader runs the f32 build
    s.page.goto(server.url + "/")
    assert s.wait_state("needs-download") == "needs-download"
    assert s.lantern(".selection.tier") == "gpu"
    assert s.lantern(".selection.variant.probe.tokens"), "the API does not pass the manifest's probe through"
    s.page.click("#download-button")
    # Downloaded and verified (the hashes match), started on the GPU, checked: a wrong answer.
    s.page.wait_for_function("() => window.lantern.probe", timeout=LOAD_TIMEOUT)
    result = s.lantern(".probe")
    assert result["ok"] is False and result["at"] == 0, result
    assert result["got"] != result["expected"]
    # The page moves to the next rung (no f16 build on SwiftShader, so the processor) and says why.
    assert s.wait_state("needs-download", "ready", "engine-failed", "unsupported") == "needs-download", s.lantern(
        ".error"
    )
    assert s.lantern(".selection.tier") == "cpu" and s.lantern(".selection.ok") is True
    reason = s.page.locator("#choice-reason").inner_text()
    assert "wrong answers" in reason and "processor" in reason, reason
    assert "computed a wrong answer" in s.page.locator("#capability-notes").inner_text()
    assert s.engine_workers(), "the GPU engine never ran"
    stored = s.page.evaluate("() => JSON.parse(localStorage.getItem('lantern.probes'))")
    (adapter,) = stored
    assert "fallback" in adapter  # SwiftShader
    assert [r["ok"] for r in stored[adapter].values()] == [False]

    # The processor tier downloads and answers.
    s.page.click("#download-button")
    assert s.wait_state("ready", "engine-failed", "download-failed", timeout=180_000) == "ready", s.lantern(".error")
    assert s.lantern(".engine.tier") == "cpu"
    s.set_greedy()
    s.page.fill("#max-tokens", "6")
    s.page.dispatch_event("#max-tokens", "change")
    reply = s.ask("Hello")
    assert reply["stats"]["tier"] == "cpu" and reply["finishReason"] in ("stop", "length")

    # Remembered for this adapter and build: a reload goes straight to the processor, no GPU engine, no check.
    workers = len(s.engine_workers())
    s.page.reload()
    assert s.wait_state("ready", "needs-download", "engine-failed", timeout=120_000) == "ready", s.lantern(".error")
    assert s.lantern(".engine.tier") == "cpu" and s.lantern(".probe") is None
    assert "wrong answers" in s.page.locator("#choice-reason").inner_text()
    assert len(s.engine_workers()) == workers


def test_a_correct_build_passes_the_check_once_per_adapter(serve, chromium, tiny_chat_models):
    server = serve(tiny_chat_models)
    s = chromium(webgpu=True)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    s.page.click("#download-button")
    assert s.wait_state("ready", "engine-failed", timeout=LOAD_TIMEOUT) == "ready", s.lantern(".error")
    result = s.lantern(".probe")
    tokens = s.lantern(".selection.variant.probe.tokens")
    assert result["ok"] is True, result
    assert result["checked"] == len(tokens) or result["endedAtTie"], (result, tokens)
    assert [e["type"] for e in s.lantern(".events")].count("probe") == 1
    # The next load on this adapter trusts the remembered result.
    s.page.reload()
    assert s.wait_state("ready", "engine-failed", timeout=LOAD_TIMEOUT) == "ready", s.lantern(".error")
    assert s.lantern(".probe") is None and s.lantern(".engine.tier") == "gpu"


CHOOSE = """async ([wrong, tier]) => {
  const { chooseVariant } = await import('/static/js/choose.js');
  const { buildKey } = await import('/static/js/probe.js');
  const model = window.lantern.catalog.models[0];
  const key = (q) => buildKey(model.variants.find((v) => v.quantization === q));
  const big = 2 ** 31;
  const webgpu = {
    available: true, software: false, name: 'Test GPU', shaderF16: true, features: ['shader-f16'],
    limits: { maxBufferSize: big, maxStorageBufferBindingSize: big, maxStorageBuffersPerShaderStage: 16,
      maxComputeWorkgroupStorageSize: 65536, maxComputeInvocationsPerWorkgroup: 1024 },
    wrongBuilds: wrong.map(key),
  };
  const caps = { ...window.lantern.capabilities, webgpu };
  const r = chooseVariant(caps, model, { tier });
  return { tier: r.tier, quantization: r.quantization, reason: r.reason, ok: r.ok };
}"""


def test_the_ladder_skips_builds_that_answered_wrongly(serve, chromium, tiny_site_models):
    """With shader-f16 the f16 build comes first; once it answered wrongly on this GPU the f32 build; once
    both did, the processor, even when Settings ask for the GPU."""
    server = serve(tiny_site_models)
    s = chromium(webgpu=False, tier=None)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download", "unsupported")
    first = s.page.evaluate(CHOOSE, [[], "gpu"])
    assert (first["tier"], first["quantization"]) == ("gpu", "q4f16_1"), first
    second = s.page.evaluate(CHOOSE, [["q4f16_1"], "gpu"])  # "auto" needs a library (these builds have none)
    assert (second["tier"], second["quantization"]) == ("gpu", "q4f32_1"), second
    assert "wrong answers with the q4f16_1 build" in second["reason"]
    for tier in ("auto", "gpu"):
        last = s.page.evaluate(CHOOSE, [["q4f16_1", "q4f32_1"], tier])
        assert last["tier"] == "cpu" and last["ok"], last
        assert "computed wrong answers" in last["reason"] and "processor" in last["reason"], last
