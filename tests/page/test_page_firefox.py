"""The page in real Firefox (Debian's Firefox ESR over WebDriver BiDi, testing/firefox.py): with no WebGPU by
default on Linux it says so and picks the processor tier, downloads and verifies the model, answers greedily
with wasm threads (half the cores), keeps every request on its origin with no prompt in any, and chats offline from its
service worker once the server is gone.

Environment: needs Debian's firefox-esr and npm puppeteer-core (make install-test installs both); a missing
one fails these tests with the reason."""

from __future__ import annotations

import pytest

from testing.browser_session import RequestRecorder, assert_private
from testing.fixtures import _build_with_library, _tiny_config, cpu_threads, live_server, threads_text

pytestmark = pytest.mark.browser

GERMANY = "What is the capital of Germany?"
FRANCE = "What is the capital of France?"


@pytest.fixture(scope="session")
def tiny_f16_chat_models(tmp_path_factory):
    """The tiny random Llama as q4f16_1 with its compiled WebGPU library (f16 WGSL; ~75 s once, then the
    compiler's library cache) plus the processor tier's GGUF."""
    tmp = tmp_path_factory.mktemp("site-tiny-f16")
    return _build_with_library(_tiny_config(tmp), tmp / "models", quantizations=["q4f16_1"])


SHELL = """async () => {
  const r = await navigator.serviceWorker.getRegistration();
  if (!r || !r.active || r.active.state !== 'activated' || !navigator.serviceWorker.controller) return null;
  const keys = (await caches.keys()).filter((k) => k.startsWith('lantern-shell-'));
  return keys.length === 1 && keys[0] === 'lantern-shell-' + window.lantern.build ? keys : null;
}"""


def test_firefox_without_webgpu_explains_and_picks_the_processor(serve, firefox, tiny_site_models):
    server = serve(tiny_site_models)
    s = firefox()
    assert s.version.startswith("firefox/")
    s.goto(server.url + "/")
    assert s.wait_state("needs-download", "unsupported") == "needs-download"
    assert s.evaluate("() => typeof navigator.gpu") == "undefined"
    selection = s.lantern(".selection")
    assert selection["tier"] == "cpu" and selection["tiers"] == ["cpu"]
    assert selection["variantId"] == "tiny-llama-cpu"
    reason = s.text("#choice-reason")
    assert "does not support WebGPU" in reason and "on your processor instead" in reason, reason
    threads = cpu_threads(s.evaluate("() => navigator.hardwareConcurrency"))
    assert f"processor ({threads_text(threads)}" in s.text("#capability-summary")
    # Cross-origin isolated with SharedArrayBuffer: wllama's threaded build, and nothing to warn about.
    assert s.lantern(".capabilities.wasm") == {
        "simd": True,
        "isolated": True,
        "sharedMemory": True,
        "oneThreadReason": None,
        "threads": threads,
    }
    assert "one thread" not in s.text("#capability-notes")
    # Download and verify the tiny GGUF, start llama.cpp in wasm: ready.
    s.click("#download-button")
    # A tiny GGUF is ready in seconds on an idle machine; in a full CI run it once took over a minute.
    assert s.wait_state("ready", "engine-failed", "download-failed", timeout=180_000) == "ready", s.where()
    assert s.lantern(".engine.tier") == "cpu" and s.lantern(".engine.threads") == threads
    assert s.lantern(".cspViolations") == []


def test_firefox_with_webgpu_enabled_sees_lavapipe_with_f16_and_still_prefers_the_processor(
    serve, firefox, tiny_site_models
):
    """dom.webgpu.enabled: Mesa's lavapipe (a CPU Vulkan) gives Firefox an adapter with shader-f16. The page
    reads it, knows it for a software renderer, and keeps the model on the processor, saying why. (The GPU
    path answering there needs a compiled f16 model library; not run here.)"""
    from testing.firefox import WEBGPU_PREFS

    server = serve(tiny_site_models)
    s = firefox(prefs=WEBGPU_PREFS)
    s.goto(server.url + "/")
    assert s.wait_state("needs-download", "unsupported") == "needs-download"
    webgpu = s.lantern(".capabilities.webgpu")
    assert webgpu["available"] and webgpu["shaderF16"] and webgpu["software"], webgpu
    assert s.lantern(".selection.tier") == "cpu"
    assert "software renderer" in s.text("#choice-reason")


@pytest.mark.slow
def test_firefox_answers_privately_on_the_processor_and_offline(firefox, smollm2_models):
    from webapp import create_app

    recorder = RequestRecorder()
    app = create_app({"MODELS_DIR": str(smollm2_models), "TESTING": True, "FALLBACK_PRELOAD": False})
    s = firefox()
    with live_server(app, recorder.wrap) as server:
        s.goto(server.url + "/")
        s.wait_state("needs-download")
        s.click("#download-button")
        state = s.wait_state("ready", "engine-failed", "download-failed", timeout=180_000)
        assert state == "ready", s.lantern(".error")
        threads = cpu_threads(s.evaluate("() => navigator.hardwareConcurrency"))
        assert s.lantern(".engine.tier") == "cpu" and s.lantern(".engine.threads") == threads
        assert f"runs on your processor ({threads_text(threads)}" in s.text("#engine-status")
        assert s.text("#privacy") == "On this device"
        s.set_greedy()
        reply = s.ask(GERMANY)
        assert "Berlin" in reply["text"], reply
        assert reply["finishReason"] == "stop" and reply["stats"]["tier"] == "cpu"

        # Privacy, as Firefox saw it: every request stayed on this origin and none carried the prompt in its
        # URL or headers (over BiDi a request body cannot be read; the server's record below has them all).
        seen = s.requests()
        assert seen
        for r in seen:  # data: URLs (Firefox's own built-in fonts) never reach the network
            assert r["url"].startswith((server.url, "blob:" + server.url, "data:")), r["url"][:200]
            assert GERMANY not in r["url"] and "capital" not in r["url"], r["url"]
            assert all(GERMANY not in str(v) for v in r["headers"].values()), r["url"]
        # ... and as the server saw it: only the page's own files, nothing sent to /v1/, no prompt anywhere.
        assert_private(recorder, [GERMANY])
        assert s.lantern(".cspViolations") == []
        s.poll(SHELL, timeout=60_000)
        assert s.evaluate(SHELL), "the service worker never took over the page"
        seen_before_stop = len(recorder.seen)

    # The server is gone: the reload comes from the service worker, the model from Firefox's storage.
    s.reload()
    assert s.wait_state("ready", "engine-failed", "error", timeout=180_000) == "ready", s.lantern(".error")
    assert s.lantern(".offline") is True
    assert s.text("#offline") == "Offline — answers still come from this device"
    assert s.lantern(".storedCheck.damaged") == []
    assert s.lantern(".capabilities.wasm.isolated") is True  # the cached page keeps its COOP/COEP headers
    offline = s.ask(FRANCE)
    assert offline["finishReason"] in ("stop", "length") and offline["text"].strip(), offline
    assert offline["stats"]["tier"] == "cpu"
    assert len(recorder.seen) == seen_before_stop


@pytest.mark.slow
def test_firefox_webgpu_on_lavapipe_answers_with_the_f16_build(serve, firefox, tiny_f16_chat_models):
    """The GPU path in a real browser that has shader-f16 (Chromium's SwiftShader has not): Firefox with
    WebGPU enabled, switched to the GPU tier in Settings, loads the q4f16_1 library and answers greedily."""
    from testing.firefox import WEBGPU_PREFS

    server = serve(tiny_f16_chat_models)
    s = firefox(prefs=WEBGPU_PREFS)
    s.goto(server.url + "/")
    s.wait_state("needs-download")
    assert set(s.lantern(".selection.tiers")) == {"cpu", "gpu"} and s.lantern(".selection.tier") == "cpu"
    s.evaluate("() => localStorage.setItem('lantern.tier', 'gpu')")  # the Settings choice, kept across visits
    s.reload()
    s.wait_state("needs-download")
    selection = s.lantern(".selection")
    assert selection["tier"] == "gpu" and selection["variantId"] == "tiny-llama-q4f16_1", selection
    assert "shader-f16" in selection["variant"]["required_features"]
    s.click("#download-button")
    assert s.wait_state("ready", "engine-failed", "download-failed", timeout=300_000) == "ready", s.lantern(".error")
    assert s.lantern(".engine.tier") == "gpu"
    s.set_greedy()
    s.evaluate(
        "() => { const m = document.getElementById('max-tokens'); m.value = '12'; m.dispatchEvent(new Event('change')); }"
    )
    reply = s.ask("Hello", timeout=300_000)  # the random tiny model never stops by itself
    assert reply["kind"] == "local" and reply["finishReason"] == "length", reply
    assert reply["stats"]["completionTokens"] == 12 and reply["text"], reply
    assert "tier" not in reply["stats"]  # the GPU engine's answer (the processor tier tags its own)
    assert not server.paths("/v1/")
