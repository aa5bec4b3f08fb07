"""The GPU goes away under a running engine (a driver reset, a GPU process crash): the page says so,
offers a reload that recovers, and once it happens again in the same session offers the server too.

A real loss: Chromium's GPU process is crashed through the DevTools protocol, which ends every
WebGPU device with reason "unknown", exactly what a driver reset does. The test runs in a browser of
its own so the crash cannot touch other tests.
"""

from __future__ import annotations

import pytest
from test_page_chat import LOAD_TIMEOUT, PROMPT, ask, assert_private, ready_session

pytestmark = pytest.mark.browser


def crash_gpu_process(s) -> None:
    s.context.browser.new_browser_cdp_session().send("Browser.crashGpuProcess")


def visible_actions(s) -> list[str]:
    return s.page.evaluate(
        "() => [...document.querySelectorAll('#error button')].filter((b) => !b.hidden).map((b) => b.id)"
    )


def test_gpu_loss_offers_reload_then_the_server(serve, chromium, tiny_chat_models):
    server, s = ready_session(serve, chromium, tiny_chat_models, dedicated=True)

    # Lost in the middle of an answer: the answer ends as failed, the page offers a reload.
    ask(s, "Tell a long story.", temperature=0, wait=False)
    s.page.wait_for_function(
        "() => window.lantern.state === 'generating' && window.lantern.lastReply.deltas >= 2", timeout=600_000
    )
    before = s.page.evaluate("() => window.lantern.replyCount")
    crash_gpu_process(s)
    s.page.wait_for_function("(n) => window.lantern.replyCount > n", arg=before, timeout=60_000)
    assert s.lantern(".lastReply.finishReason") == "error"
    assert s.lantern(".error.code") == "device-lost", s.lantern(".error")
    assert s.lantern(".state") == "engine-failed"
    assert s.lantern(".engine.status") == "lost"
    assert "Reload the page" in s.page.locator("#error").inner_text()
    assert visible_actions(s) == ["reload-page"]  # the first loss: no talk of the server yet
    assert s.engine_workers(), "the engine worker never started"

    # A message now is not sent anywhere; the page says what to do.
    s.page.fill("#prompt", PROMPT)
    s.page.click("#send")
    s.page.wait_for_function("() => document.querySelector('#engine-status').textContent.includes('reload')")
    assert s.lantern(".replyCount") == before + 1

    # The reload recovers: a new GPU process, the engine from the verified cache, a real answer.
    served = len(server.paths("/models/"))
    s.page.click("#reload-page")
    assert s.wait_state("ready", "engine-failed", timeout=LOAD_TIMEOUT) == "ready", s.lantern(".error")
    assert server.paths("/models/")[served:] == []
    reply = ask(s, PROMPT, temperature=0, max_tokens=8)
    assert reply["finishReason"] in ("stop", "length") and reply["text"].strip()
    assert s.lantern(".deviceLosses") == 1

    # Lost again while idle, in the same session: reload, and now the server as well (never used unasked).
    crash_gpu_process(s)
    s.page.wait_for_function(
        "() => window.lantern.error && window.lantern.error.code === 'device-lost'", timeout=60_000
    )
    assert s.lantern(".deviceLosses") == 2
    assert s.lantern(".state") == "engine-failed"
    assert visible_actions(s) == ["reload-page", "offer-server"]
    assert_private(s, server, PROMPT)
