"""The CPU tier in real Chromium: a browser without a usable GPU runs the model privately on its processor
(llama.cpp in WebAssembly on the model's GGUF), with verified downloads, threads when cross-origin
isolated, the same prompt and greedy answer as the server, and a Settings switch between local tiers."""

from __future__ import annotations

import json
import urllib.request

import pytest

from build_pipeline.chat_template import prompt_pieces
from build_pipeline.contract import CHAT_CONFIG_FILE, SERVER_GGUF_FILE
from testing.fixtures import NetworkFaults, copy_models, cpu_threads, threads_text

pytestmark = pytest.mark.browser

GERMANY = "What is the capital of Germany?"
CONVERSATIONS = [
    [("user", GERMANY)],
    [("system", "You answer in one word."), ("user", "Name a colour."), ("assistant", "Blue."), ("user", "Another?")],
    [("system", ""), ("user", "Hi {user_message} <|im_end|>")],
]
PIECES = """async ([conv, messages]) => {
  const { promptPieces } = await import('/static/js/prompt.js');
  return promptPieces(conv, messages.map(([role, content]) => ({ role, content })));
}"""


def server_answer(url: str, text: str, max_tokens: int) -> str:
    body = json.dumps(
        {"messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": max_tokens}
    ).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"]


def test_prompt_pieces_match_the_pipeline(serve, chromium, tiny_site_models):
    """prompt.js is the page's twin of build_pipeline.chat_template.prompt_pieces: same pieces, every case."""
    server = serve(tiny_site_models)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported", "needs-download")
    chat = json.loads((tiny_site_models / "tiny-llama" / "q4f32_1" / CHAT_CONFIG_FILE).read_text())
    conv = chat["conv_template"]
    for messages in CONVERSATIONS:
        assert s.page.evaluate(PIECES, [conv, messages]) == prompt_pieces(conv, messages), messages
    # A template without role separators gets web-llm's default ": ".
    bare = {**conv, "role_content_sep": None, "role_empty_sep": None}
    assert s.page.evaluate(PIECES, [bare, CONVERSATIONS[1]]) == prompt_pieces(bare, CONVERSATIONS[1])


def test_without_a_gpu_the_cpu_tier_is_chosen_and_nothing_else_is_needed(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=False, tier=None)
    s.page.goto(server.url + "/")
    assert s.wait_state("needs-download") == "needs-download"
    selection = s.lantern(".selection")
    assert selection["tier"] == "cpu" and selection["tiers"] == ["cpu"]
    assert selection["variantId"] == "tiny-llama-cpu"
    assert "processor" in s.page.locator("#capability-summary").inner_text()
    assert "no GPU" in s.page.locator("#choice-reason").inner_text()
    assert s.lantern(".capabilities.wasm") == {
        "simd": True,
        "isolated": True,
        "sharedMemory": True,
        "oneThreadReason": None,
        "threads": cpu_threads(s.page.evaluate("navigator.hardwareConcurrency")),
    }
    # The Settings switch offers only what can run here.
    assert s.page.evaluate("() => document.querySelector('#local-tier option[value=gpu]').disabled")
    assert not s.page.evaluate("() => document.querySelector('#local-tier option[value=cpu]').disabled")


@pytest.mark.slow
def test_cpu_tier_chats_privately_and_answers_like_the_server(serve, chromium, smollm2_models):
    server = serve(smollm2_models)
    s = chromium(webgpu=False, tier=None)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    s.page.click("#download-button")
    assert s.wait_state("ready", "engine-failed", "download-failed", timeout=180_000) == "ready", s.lantern(".error")
    engine = s.lantern(".engine")
    threads = cpu_threads(s.page.evaluate("navigator.hardwareConcurrency"))
    assert engine["tier"] == "cpu" and engine["threads"] == threads
    assert f"runs on your processor ({threads_text(threads)}" in s.page.locator("#engine-status").inner_text()
    assert s.page.locator("#privacy").inner_text() == "On this device"
    s.set_greedy()
    reply = s.ask(GERMANY)
    assert "Berlin" in reply["text"], reply
    assert reply["finishReason"] == "stop" and reply["stats"]["tier"] == "cpu"
    assert reply["stats"]["decodeTokensPerSecond"] > 0
    assert "tokens/s" in s.page.locator("#engine-status").inner_text()  # its real speed, measured here
    # Multi-turn keeps working (the context keeps the shared prefix).
    follow = s.ask("And of France?")
    assert follow["finishReason"] in ("stop", "length") and follow["text"]

    # Privacy: every request stayed on this origin, and none carried the prompt.
    for r in s.requests:  # blob: URLs of this origin are wllama's own worker code, never the network
        assert r["url"].startswith((server.url, "blob:" + server.url)), r["url"]
        for text in (GERMANY, "And of France?"):
            assert text not in r["url"] and text.encode() not in r["body"], r["url"]
            assert all(text not in str(v) for v in r["headers"].values()), r["url"]
    assert not server.paths("/v1/")
    assert s.lantern(".cspViolations") == []

    # Same GGUF, same prompt tokens, greedy: the server's llama.cpp answers the same words.
    assert server_answer(server.url, GERMANY, 64) == reply["text"]

    # Stop ends an answer early; Remove frees the stored model (the next visit would download again).
    count = s.lantern(".replyCount")
    s.page.fill("#prompt", "Write a long story about a dragon who learns to cook.")
    s.page.click("#send")
    s.page.wait_for_function(
        "() => window.lantern.state === 'generating' && window.lantern.lastReply.deltas >= 3", timeout=60_000
    )
    s.page.click("#stop")
    s.page.wait_for_function("(n) => window.lantern.replyCount > n", arg=count, timeout=30_000)
    assert s.lantern(".lastReply.finishReason") == "abort"
    s.page.click("#remove-button")
    assert s.wait_state("needs-download", timeout=30_000) == "needs-download"
    assert s.poll("() => window.lantern.api.inspectCache()")["cachedBytes"] == 0


@pytest.mark.slow
def test_without_cross_origin_isolation_one_thread_and_it_says_so(serve, chromium, smollm2_models):
    def no_isolation(app):
        def wsgi(environ, start_response):
            def start(status, headers, exc_info=None):
                kept = [(k, v) for k, v in headers if k.lower() != "cross-origin-embedder-policy"]
                return start_response(status, kept, exc_info)

            return app(environ, start)

        return wsgi

    server = serve(smollm2_models, wsgi_wrapper=no_isolation)
    s = chromium(webgpu=False, tier=None)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    assert s.lantern(".capabilities.wasm") == {
        "simd": True,
        "isolated": False,
        "sharedMemory": False,
        "oneThreadReason": "not-isolated",
        "threads": 1,
    }
    assert "one thread" in s.page.locator("#capability-notes").inner_text()
    s.page.click("#download-button")
    assert s.wait_state("ready", "engine-failed", "download-failed", timeout=180_000) == "ready"
    assert s.lantern(".engine.threads") == 1  # wllama's own count: its single-thread build runs
    assert "one because this page isn't cross-origin isolated" in s.page.locator("#engine-status").inner_text()
    s.set_greedy()
    assert "Berlin" in s.ask(GERMANY)["text"]


@pytest.mark.slow
def test_a_corrupted_gguf_is_caught_by_its_hash_and_never_loaded(serve, chromium, smollm2_models, tmp_path):
    faults = NetworkFaults()
    faults.set(SERVER_GGUF_FILE, "corrupt")  # every attempt: one byte flipped in transit
    server = serve(copy_models(smollm2_models, tmp_path / "models"), wsgi_wrapper=faults.wrap)
    s = chromium(webgpu=False, tier=None)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    s.page.click("#download-button")
    assert s.wait_state("download-failed", "ready", timeout=180_000) == "download-failed"
    assert s.lantern(".error.code") == "download-failed"
    assert s.lantern(".engine.startedCount") == 0
    # wllama's worker was never started (the service worker precaches its files anyway); the only worker
    # was Lantern's download worker, which fetched and hashed the file.
    assert [w for w in s.workers if not w.endswith("/static/js/verify-worker.js")] == []
    stored = s.poll("() => window.lantern.api.inspectCache()")
    assert SERVER_GGUF_FILE not in stored["cached"]


@pytest.mark.slow
def test_software_adapter_prefers_the_cpu_tier_and_settings_switch_tiers(serve, chromium, tiny_chat_models):
    server = serve(tiny_chat_models)
    s = chromium(webgpu=True, tier=None)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    s.page.evaluate("() => { window.lanternMarker = 1; }")  # survives only if the page never reloads
    selection = s.lantern(".selection")
    assert selection["tier"] == "cpu" and set(selection["tiers"]) == {"cpu", "gpu"}
    assert "software renderer" in s.page.locator("#choice-reason").inner_text()
    s.page.click("#download-button")
    assert s.wait_state("ready", "engine-failed", timeout=180_000) == "ready"
    s.set_greedy()
    s.page.fill("#max-tokens", "12")  # the random tiny model never stops by itself
    s.page.dispatch_event("#max-tokens", "change")
    cpu_reply = s.ask("Hello")
    assert cpu_reply["stats"]["tier"] == "cpu" and cpu_reply["finishReason"] in ("stop", "length")

    s.page.select_option("#local-tier", "gpu")
    s.page.wait_for_function(
        "() => window.lantern.selection.tier === 'gpu' && window.lantern.state === 'needs-download'", timeout=60_000
    )
    assert s.lantern(".selection.tier") == "gpu"
    s.page.click("#download-button")
    assert s.wait_state("ready", "engine-failed", timeout=600_000) == "ready", s.lantern(".error")
    assert s.lantern(".engine.tier") == "gpu" and s.engine_workers()
    gpu_reply = s.ask("Hello", timeout=600_000)
    assert gpu_reply["finishReason"] in ("stop", "length") and "tier" not in gpu_reply["stats"]

    s.page.select_option("#local-tier", "cpu")  # already downloaded: straight back to ready
    s.page.wait_for_function(
        "() => window.lantern.engine.tier === 'cpu' && window.lantern.state === 'ready'", timeout=60_000
    )
    assert s.ask("Hello")["stats"]["tier"] == "cpu"
    assert s.page.evaluate("() => window.lanternMarker") == 1
    assert s.page.evaluate("() => localStorage.getItem('lantern.tier')") == "cpu"
