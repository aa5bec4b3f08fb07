"""Real in-browser chat: web-llm in a worker on SwiftShader with Lantern's verified cache.

Needs a variant with a compiled WebGPU library; the fixtures skip (saying why) only when the
library cannot be built in this checkout. Tiny random model in the fast set, SmolLM2-135M in the slow set.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.browser

# Natural wording (SmolLM2 must answer it); nothing else the page sends contains this sentence.
PROMPT = "What is the capital of France?"
LOAD_TIMEOUT = 900_000  # SwiftShader compiles every WGSL kernel at load


def ready_session(serve, chromium, models, *, dedicated=False):
    server = serve(models)
    s = chromium(webgpu=True, dedicated=dedicated)
    s.page.goto(server.url + "/")
    state = s.wait_state("needs-download", "ready", "engine-failed", "unsupported")
    assert state == "needs-download", (state, s.lantern(".error"))
    assert s.lantern(".selection.canChat") is True
    # SwiftShader is a software adapter: the page takes the library built for it, and only that one.
    chosen = s.lantern(".selection.variant")
    assert chosen["library"]["file"].endswith("-swiftshader.wasm"), chosen["library"]
    assert [f["path"] for f in chosen["files"] if f["path"].endswith(".wasm")] == [chosen["library"]["file"]]
    s.page.click("#download-button")
    state = s.wait_state("ready", "engine-failed", "download-failed", timeout=LOAD_TIMEOUT)
    assert state == "ready", (s.lantern(".error"), s.console[-20:])
    return server, s


def ask(s, text, *, temperature=None, max_tokens=None, wait=True, timeout=600_000):
    if temperature is not None:
        s.page.fill("#temperature", str(temperature))
        s.page.locator("#temperature").dispatch_event("input")
    s.page.fill("#max-tokens", "" if max_tokens is None else str(max_tokens))
    s.page.locator("#max-tokens").dispatch_event("change")
    before = s.page.evaluate("() => window.lantern.replyCount")
    s.page.fill("#prompt", text)
    s.page.click("#send")
    if wait:
        s.page.wait_for_function("(n) => window.lantern.replyCount > n", arg=before, timeout=timeout)
        return s.lantern(".lastReply")
    return None


def assert_private(s, server, prompt):
    """Nothing went to another origin; nothing sent carried the prompt (URL, headers, body)."""
    origin = urlsplit(server.url)
    assert s.requests, "the request log is empty: the listener is broken"
    for r in s.requests:
        u = urlsplit(r["url"])
        if u.scheme in ("data", "blob"):
            continue
        assert (u.scheme, u.netloc) == (origin.scheme, origin.netloc), r["url"]
        assert prompt not in r["url"]
        assert all(prompt not in str(v) for v in r["headers"].values()), r["url"]
        assert prompt.encode() not in r["body"], r["url"]
        assert not u.path.startswith("/v1/"), r["url"]


def chat_flow(serve, chromium, models, *, expect=None):
    server, s = ready_session(serve, chromium, models)
    assert len(s.engine_workers()) == 1
    assert s.lantern(".engine.kind") == "local"
    assert s.page.locator("#privacy").inner_text() == "On this device"

    first = ask(s, PROMPT, temperature=0, max_tokens=24)
    assert first["kind"] == "local" and first["finishReason"] in ("stop", "length")
    assert first["text"].strip()
    assert first["deltas"] >= 2  # streamed token by token
    assert first["stats"]["completionTokens"] <= 24  # the answer-length setting reaches the engine
    if expect:
        assert expect in first["text"]
    stats = first["stats"]
    assert stats["ttftSeconds"] > 0 and stats["decodeTokensPerSecond"] > 0
    assert "tokens/s" in s.page.locator("#stats").inner_text()

    # Multi-turn: a follow-up in the same conversation.
    second = ask(s, "Say it again in one word.", temperature=0, max_tokens=16)
    assert second["finishReason"] in ("stop", "length")
    assert s.page.locator(".message.user").count() == 2

    # Stop: a long greedy answer in a new chat (the tiny chat build has a 2048-token context), interrupted.
    s.page.click("#new-chat")
    assert s.page.locator(".message").count() == 0
    ask(s, "Tell a long story.", temperature=0, wait=False)
    s.page.wait_for_function(
        "() => window.lantern.state === 'generating' && window.lantern.lastReply.deltas >= 2", timeout=600_000
    )
    stops_before = s.page.evaluate("() => window.lantern.replyCount")
    s.page.click("#stop")
    s.page.wait_for_function("(n) => window.lantern.replyCount > n", arg=stops_before, timeout=120_000)
    stopped = s.lantern(".lastReply")
    assert stopped["finishReason"] == "abort", stopped
    assert s.page.locator(".message.assistant .meta").last.inner_text() == "Stopped"

    # Conversations: saved in IndexedDB, listed, reopened, deletable.
    saved = s.page.evaluate("() => window.lantern.api.listConversations()")
    assert sorted(len(c["messages"]) for c in saved) == [2, 4]
    assert all(c["mode"] == "local" for c in saved)
    assert s.page.locator("#conversations li").count() == 2
    s.page.locator("#conversations li:not(.current) button.open").click()
    s.page.wait_for_function("() => document.querySelectorAll('.message').length === 4")
    for _ in range(2):
        s.page.locator("#conversations li button.delete").first.click()
    s.page.wait_for_function("() => document.querySelectorAll('#conversations li').length === 0")
    assert s.page.evaluate("() => window.lantern.api.listConversations()") == []

    assert_private(s, server, PROMPT)
    assert s.lantern(".cspViolations") == []

    # Reload: the engine starts from the verified cache; no model file crosses the network again.
    served = len(server.paths("/models/"))
    s.page.reload()
    assert s.wait_state("ready", "engine-failed", timeout=LOAD_TIMEOUT) == "ready", s.lantern(".error")
    assert server.paths("/models/")[served:] == []
    assert s.lantern(".download.status") == "idle"  # nothing downloaded this time
    again = ask(s, PROMPT, temperature=0, max_tokens=24)
    assert again["text"] == first["text"]  # greedy: same answer from the same weights
    assert_private(s, server, PROMPT)
    return s


def test_tiny_model_chats_locally(serve, chromium, tiny_chat_models):
    chat_flow(serve, chromium, tiny_chat_models)


@pytest.mark.slow
def test_smollm2_chats_locally(serve, chromium, smollm2_chat_models):
    chat_flow(serve, chromium, smollm2_chat_models, expect="Paris")


def test_corrupt_shard_never_reaches_a_real_engine(serve, chromium, tiny_chat_models, tmp_path):
    """With a real library too: the damaged shard stops everything before the worker exists."""
    from testing.fixtures import copy_models

    models = copy_models(tiny_chat_models, tmp_path / "models")
    shard = models / "tiny-llama" / "q4f32_1" / "params_shard_0.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x80
    shard.write_bytes(bytes(data))
    server = serve(models)
    s = chromium(webgpu=True)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    s.page.click("#download-button")
    assert s.wait_state("download-failed", "ready", timeout=120_000) == "download-failed"
    assert s.engine_workers() == [] and s.lantern(".engine.startedCount") == 0
    s.page.reload()
    assert s.wait_state("needs-download", "ready") == "needs-download"
    assert s.engine_workers() == []
