"""The CPU tier on a GGUF served as gguf-split parts (cpu_tier.py): the page downloads and verifies each
part as an ordinary file of the tier, hands them to wllama in order, and answers like the server, which
runs the whole file. The build's part limit is lowered so the 100 MB SmolLM2 GGUF becomes 3 parts."""

from __future__ import annotations

import json
import urllib.request

import pytest

from build_pipeline import cpu_tier
from testing.fixtures import NetworkFaults, copy_models

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GERMANY = "What is the capital of Germany?"
PART_LIMIT = 40_000_000  # SmolLM2-135M's Q4_1 GGUF is 98.4 MB: 3 parts


@pytest.fixture(scope="session")
def smollm2_split_models(tmp_path_factory):
    from build_pipeline.build import build
    from build_pipeline.model_config import load_model_config
    from build_pipeline.paths import model_configs_dir

    out = tmp_path_factory.mktemp("site-smollm2-split") / "models"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cpu_tier.PART_MAX_BYTES_ENV, str(PART_LIMIT))
        spec = load_model_config(model_configs_dir() / "smollm2-135m-instruct.toml")
        build(spec, out, quantizations=["q4f32_1"], compile_library=False)
    return out


def server_answer(url: str, text: str, max_tokens: int) -> str:
    body = json.dumps(
        {"messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": max_tokens}
    ).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"]


def test_each_part_is_downloaded_verified_and_loaded_in_order(serve, chromium, smollm2_split_models):
    server = serve(smollm2_split_models)
    s = chromium(webgpu=False, tier=None)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    tier = s.lantern(".selection.variant")
    parts = tier["gguf_parts"]
    assert tier["tier"] == "cpu" and len(parts) == 3 and tier["part_max_bytes"] == PART_LIMIT
    files = {f["path"]: f for f in tier["files"]}
    assert all(files[p]["role"] == "gguf" and files[p]["bytes"] <= PART_LIMIT for p in parts)

    s.page.click("#download-button")
    assert s.wait_state("ready", "engine-failed", "download-failed", timeout=180_000) == "ready", s.lantern(".error")
    progress = s.lantern(".download")
    for name in parts:  # each part fetched once and hashed by the page, matching the manifest
        assert progress["fetched"].count(name) == 1
        assert progress["files"][name]["status"] == "done"
        assert progress["files"][name]["sha256"] == files[name]["sha256"]
    served = [p.rsplit("/", 1)[1] for p in server.paths(tier["base_url"], status=200)]
    assert sorted(served) == sorted(files)  # the parts and the chat config, nothing else (no whole GGUF)
    assert s.lantern(".engine.tier") == "cpu"

    # llama.cpp refuses a split with a part missing or out of order, so an answer means all three loaded.
    s.set_greedy()
    reply = s.ask(GERMANY)
    assert "Berlin" in reply["text"], reply
    assert reply["stats"]["tier"] == "cpu"
    # The server's llama.cpp runs the whole model.gguf: the same words.
    assert server_answer(server.url, GERMANY, 64) == reply["text"]


def test_a_corrupted_part_is_caught_by_its_hash_and_never_loaded(serve, chromium, smollm2_split_models, tmp_path):
    faults = NetworkFaults()
    faults.set("model-00002-of-00003.gguf", "corrupt")  # every attempt: one byte flipped in transit
    server = serve(copy_models(smollm2_split_models, tmp_path / "models"), wsgi_wrapper=faults.wrap)
    s = chromium(webgpu=False, tier=None)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    s.page.click("#download-button")
    assert s.wait_state("download-failed", "ready", timeout=180_000) == "download-failed"
    assert s.lantern(".engine.startedCount") == 0
    progress = s.lantern(".download")
    assert progress["files"]["model-00002-of-00003.gguf"]["status"] != "done"
    assert progress["files"]["model-00001-of-00003.gguf"]["status"] == "done"
    stored = s.poll("() => window.lantern.api.inspectCache()")
    assert "model-00002-of-00003.gguf" not in stored["cached"]
