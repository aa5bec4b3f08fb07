"""The page in real WebKit (Debian's WebKitGTK MiniBrowser through WebKitWebDriver, testing/webkit.py): no
WebGPU, so it says so and picks the processor tier; no SharedArrayBuffer although the page is cross-origin
isolated, so llama.cpp runs on one thread and the page says so; it downloads and verifies the model, answers
greedily, and keeps every request on its origin with no prompt in any.

Environment: needs Debian's webkit2gtk-driver and xvfb, and Python selenium (make install-test installs them);
a missing one fails these tests with the reason."""

from __future__ import annotations

import pytest

from testing.browser_session import RequestRecorder, assert_private

pytestmark = pytest.mark.browser

GERMANY = "What is the capital of Germany?"


def test_webkit_without_webgpu_or_shared_memory_explains_and_picks_one_processor_thread(
    serve, webkit, tiny_site_models
):
    server = serve(tiny_site_models)
    s = webkit()
    s.goto(server.url + "/")
    assert s.wait_state("needs-download", "unsupported") == "needs-download"
    assert s.evaluate("() => typeof navigator.gpu") == "undefined"
    selection = s.lantern(".selection")
    assert selection["tier"] == "cpu" and selection["tiers"] == ["cpu"]
    assert selection["variantId"] == "tiny-llama-cpu"
    reason = s.text("#choice-reason")
    assert "does not support WebGPU" in reason and "on your processor instead" in reason, reason
    # WebKitGTK: cross-origin isolated under the site's COOP/COEP, yet no SharedArrayBuffer, so one thread.
    assert s.evaluate("() => [self.crossOriginIsolated, typeof SharedArrayBuffer]") == [True, "undefined"]
    assert s.lantern(".capabilities.wasm") == {
        "simd": True,
        "isolated": True,
        "sharedMemory": False,
        "oneThreadReason": "no-shared-memory",
        "threads": 1,
    }
    assert "processor (1 thread," in s.text("#capability-summary")
    # The page names the real cause: not isolation (the page is isolated) but the missing shared memory.
    notes = s.text("#capability-notes")
    assert "one thread" in notes and "no shared memory (SharedArrayBuffer)" in notes, notes
    assert "cross-origin" not in notes
    s.click("#download-button")
    # A tiny GGUF is ready in seconds on an idle machine; in a full CI run it once took over a minute.
    assert s.wait_state("ready", "engine-failed", "download-failed", timeout=180_000) == "ready", s.where()
    assert s.lantern(".engine.tier") == "cpu" and s.lantern(".engine.threads") == 1
    assert s.lantern(".cspViolations") == []


@pytest.mark.slow
def test_webkit_answers_privately_on_one_processor_thread(serve, webkit, smollm2_models):
    recorder = RequestRecorder()
    server = serve(smollm2_models, wsgi_wrapper=recorder.wrap)
    s = webkit()
    s.goto(server.url + "/")
    s.wait_state("needs-download")
    s.click("#download-button")
    assert s.wait_state("ready", "engine-failed", "download-failed", timeout=180_000) == "ready", s.lantern(".error")
    assert s.lantern(".engine.tier") == "cpu" and s.lantern(".engine.threads") == 1
    status = s.text("#engine-status")
    assert "one because this browser gives web pages no shared memory" in status and "isolated" not in status
    assert s.text("#privacy") == "On this device"
    s.set_greedy()
    reply = s.ask(GERMANY, timeout=180_000)
    assert "Berlin" in reply["text"], reply
    assert reply["finishReason"] == "stop" and reply["stats"]["tier"] == "cpu"

    # Privacy: what the page fetched (Resource Timing) stayed on this origin; what reached the server was
    # only the page's own files, nothing for /v1/, and no request carried the prompt (bodies included).
    fetched = s.resource_urls()
    assert fetched and all(u.startswith((server.url, "blob:" + server.url)) for u in fetched), fetched
    assert not [u for u in fetched if "capital" in u]
    assert_private(recorder, [GERMANY])
    assert not server.paths("/v1/")
    assert s.lantern(".cspViolations") == []
