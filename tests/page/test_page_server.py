"""The page's server mode (issue 5, page side): consent before any prompt leaves the browser, the
privacy indicator, streaming through the same chat UI, Stop, and clear errors when /v1 can't answer.

Most tests put a small streaming OpenAI stand-in in front of the app, so the page's client (what is
under test here) meets exact, slow or failing streams on demand; `test_real_fallback_*` runs the
consent flow end to end against the app's real /v1 API and the SmolLM2 GGUF.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

pytestmark = pytest.mark.browser

PROMPT = "Lantern-secret-prompt 7f3a: what is the capital of France?"


class StubOpenAI:
    """Streams a canned answer word by word as OpenAI SSE; records what it was sent."""

    def __init__(
        self,
        reply="The capital of **France** is Paris.",
        delay=0.02,
        status=200,
        chat_status=200,
        model="smollm2-135m-instruct",
    ):
        self.reply, self.delay, self.status, self.chat_status, self.model = reply, delay, status, chat_status, model
        self.bodies: list[dict] = []
        self.disconnected = threading.Event()

    def _json(self, start_response, status, body, extra=()):
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra])
        return [data]

    def _error(self, start_response, code):
        status = {404: "404 Not Found", 503: "503 Service Unavailable", 429: "429 Too Many Requests"}[code]
        extra = [("Retry-After", "3")] if code == 429 else []
        return self._json(
            start_response,
            status,
            {"error": {"message": "model is loading", "type": "server_error", "code": str(code)}},
            extra,
        )

    def _stream(self):
        words = self.reply.split(" ")
        try:
            for i, word in enumerate(words):
                delta = {"content": word if i == 0 else " " + word}
                if i == 0:
                    delta["role"] = "assistant"
                chunk = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                time.sleep(self.delay)
            final = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": self.model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            yield f"data: {json.dumps(final)}\n\n".encode()
            usage = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {"prompt_tokens": 12, "completion_tokens": len(words), "total_tokens": 12 + len(words)},
            }
            yield f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode()
        except GeneratorExit:
            self.disconnected.set()
            raise

    def wrap(self, app):
        def wsgi(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if not path.startswith("/v1/"):
                return app(environ, start_response)
            if self.status != 200:
                return self._error(start_response, self.status)
            if path == "/v1/models":
                return self._json(
                    start_response, "200 OK", {"object": "list", "data": [{"id": self.model, "object": "model"}]}
                )
            if path == "/v1/chat/completions" and environ["REQUEST_METHOD"] == "POST":
                size = int(environ.get("CONTENT_LENGTH") or 0)
                self.bodies.append(json.loads(environ["wsgi.input"].read(size)))
                if self.chat_status != 200:
                    return self._error(start_response, self.chat_status)
                start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
                return self._stream()
            return self._error(start_response, 404)

        return wsgi


def assert_prompt_never_sent(s, prompt=PROMPT):
    for r in s.requests:
        assert prompt not in r["url"], r["url"]
        assert all(prompt not in str(v) for v in r["headers"].values()), r["url"]
        assert prompt.encode() not in r["body"], r["url"]


def open_page(serve, chromium, models, stub, webgpu=False):
    server = serve(models, wsgi_wrapper=stub.wrap)
    s = chromium(webgpu=webgpu)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported", "needs-download", "downloaded")
    return server, s


def send(s, text=PROMPT):
    s.page.fill("#prompt", text)
    s.page.click("#send")


def consent_dialog_open(s) -> bool:
    return s.page.evaluate("() => document.getElementById('consent').open")


def test_without_consent_no_request_carries_the_prompt(serve, chromium, tiny_site_models):
    stub = StubOpenAI()
    server, s = open_page(serve, chromium, tiny_site_models, stub)
    send(s)
    s.page.wait_for_function("() => document.getElementById('consent').open")
    dialog = s.page.locator("#consent").inner_text()
    assert "will be sent to this server" in dialog and server.url.split("//")[1] in dialog
    assert "close this tab" in dialog
    assert "no GPU" in dialog  # why local mode isn't possible
    s.page.wait_for_timeout(300)
    assert s.request_urls("/v1/") == [] and stub.bodies == []
    assert_prompt_never_sent(s)

    s.page.click("#consent-decline")
    assert not consent_dialog_open(s)
    assert s.page.input_value("#prompt") == PROMPT  # kept, not sent
    assert s.page.locator("#privacy").inner_text() == "On this device"
    assert s.page.evaluate("() => sessionStorage.getItem('lantern.serverConsent')") is None
    s.page.click("#offer-server")
    s.page.click("#consent-decline")
    s.page.wait_for_timeout(300)
    assert s.request_urls("/v1/") == [] and stub.bodies == []
    assert_prompt_never_sent(s)


def test_after_consent_the_answer_streams_from_the_server(serve, chromium, tiny_site_models):
    stub = StubOpenAI(
        reply="The capital of **France** is Paris. <img src=x onerror=alert(1)> <script>alert(2)</script>"
    )
    server, s = open_page(serve, chromium, tiny_site_models, stub)
    s.page.fill("#system-prompt", "You are terse.")
    s.page.locator("#system-prompt").dispatch_event("change")
    send(s)
    s.page.click("#consent-accept")
    s.page.wait_for_function("() => window.lantern.replyCount === 1")

    assert s.page.locator("#privacy").inner_text() == "Sent to server"
    assert s.page.locator("#privacy").get_attribute("data-mode") == "server"
    reply = s.lantern(".lastReply")
    assert reply["kind"] == "server" and reply["finishReason"] == "stop"
    assert reply["deltas"] > 5  # streamed, not one blob
    assert reply["text"] == stub.reply
    answer = s.page.locator(".message.assistant").last
    assert answer.locator("strong").inner_text() == "France"
    assert "<img src=x onerror=alert(1)>" in answer.inner_text()
    assert s.page.locator("#messages img, #messages script").count() == 0
    assert "on the server" in s.page.locator("#stats").inner_text()

    [body] = stub.bodies
    assert body["stream"] is True and body["model"] == "smollm2-135m-instruct"
    assert body["messages"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}]

    # Multi-turn: the history goes with the next question.
    send(s, "And of Italy?")
    s.page.wait_for_function("() => window.lantern.replyCount === 2")
    assert [m["role"] for m in stub.bodies[1]["messages"]] == ["system", "user", "assistant", "user"]
    assert stub.bodies[1]["messages"][2]["content"] == stub.reply

    # Saved in this browser only, listed in the sidebar.
    saved = s.page.evaluate("() => window.lantern.api.listConversations()")
    assert len(saved) == 1 and saved[0]["mode"] == "server" and len(saved[0]["messages"]) == 4
    assert s.page.locator("#conversations li").count() == 1

    # Consent lasts for this browser session: kept on reload, absent in a new session.
    s.page.reload()
    s.page.wait_for_function("() => window.lantern.state === 'ready'")
    assert s.page.locator("#privacy").inner_text() == "Sent to server"
    fresh = chromium(webgpu=False)
    fresh.page.goto(server.url + "/")
    fresh.wait_state("unsupported")
    assert fresh.page.locator("#privacy").inner_text() == "On this device"
    assert fresh.lantern(".consent") is False


def test_stop_ends_a_server_answer_and_closes_the_stream(serve, chromium, tiny_site_models):
    stub = StubOpenAI(reply=" ".join(f"word{i}" for i in range(400)), delay=0.05)
    server, s = open_page(serve, chromium, tiny_site_models, stub)
    send(s)
    s.page.click("#consent-accept")
    s.page.wait_for_function("() => window.lantern.lastReply && window.lantern.lastReply.deltas >= 3")
    assert s.page.locator("#stop").is_enabled()
    s.page.click("#stop")
    s.page.wait_for_function("() => window.lantern.lastReply.finishReason === 'abort'")
    assert stub.disconnected.wait(10), "the server never saw the stream closed"
    reply = s.lantern(".lastReply")
    assert 3 <= reply["deltas"] < 400
    assert s.page.locator(".message.assistant .meta").last.inner_text() == "Stopped"
    assert s.page.locator("#send").is_enabled() and s.page.locator("#stop").is_disabled()


def test_server_mode_can_be_chosen_explicitly_and_undone(serve, chromium, tiny_site_models):
    stub = StubOpenAI()
    server, s = open_page(serve, chromium, tiny_site_models, stub, webgpu=True)
    assert s.lantern(".state") == "needs-download"  # local mode is possible here
    s.page.select_option("#mode", "server")
    s.page.wait_for_function("() => document.getElementById('consent').open")
    assert stub.bodies == [] and s.request_urls("/v1/") == []
    s.page.click("#consent-accept")
    s.wait_state("ready")
    assert s.page.locator("#privacy").inner_text() == "Sent to server"
    send(s)
    s.page.wait_for_function("() => window.lantern.replyCount === 1")
    assert stub.bodies[0]["messages"][-1]["content"] == PROMPT

    s.page.select_option("#mode", "local")
    s.wait_state("needs-download")
    assert s.page.locator("#privacy").inner_text() == "On this device"
    # Back in local mode nothing goes to the server, consent or not.
    send(s, "local only please")
    s.page.wait_for_timeout(300)
    assert len(stub.bodies) == 1
    assert "Download the model first" in s.page.locator("#engine-status").inner_text()


@pytest.mark.parametrize(
    "status, chat_status, expected",
    [
        (404, 200, "doesn't offer answers from the server"),
        (503, 200, "can't answer right now"),
        (200, 429, "busy; try again in 3 s"),
        (200, 503, "can't answer right now"),
    ],
)
def test_server_errors_are_explained(serve, chromium, tiny_site_models, status, chat_status, expected):
    stub = StubOpenAI(status=status, chat_status=chat_status)
    server, s = open_page(serve, chromium, tiny_site_models, stub)
    send(s)
    s.page.click("#consent-accept")
    s.page.wait_for_function("(t) => document.getElementById('error-message').textContent.includes(t)", arg=expected)
    assert s.page.locator("#error").is_visible()
    assert s.page.locator("#privacy").inner_text() == "Sent to server"


def test_real_fallback_answers_after_consent(serve, chromium, smollm2_models):
    """End to end with the app's real /v1 API and SmolLM2 GGUF: consent first, then a streamed answer."""
    import urllib.error
    import urllib.request

    server = serve(smollm2_models)
    deadline = time.monotonic() + 300
    while True:  # the fallback may answer 503 while its model loads
        try:
            with urllib.request.urlopen(server.url + "/v1/models") as r:
                if r.status == 200:
                    break
        except urllib.error.HTTPError as err:
            if err.code == 404:
                pytest.skip("the server fallback (/v1) is not part of the app yet")
            if time.monotonic() > deadline:
                raise
        time.sleep(2)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    question = "What is the capital of France? (consent-check 51d2)"
    s.page.fill("#temperature", "0")
    s.page.locator("#temperature").dispatch_event("input")
    send(s, question)
    s.page.wait_for_function("() => document.getElementById('consent').open")
    s.page.wait_for_timeout(300)
    assert s.request_urls("/v1/") == []  # the probe above was ours, not the page's
    assert_prompt_never_sent(s, question)
    s.page.click("#consent-accept")
    s.page.wait_for_function("() => window.lantern.replyCount === 1", timeout=300_000)
    reply = s.lantern(".lastReply")
    assert reply["finishReason"] in ("stop", "length") and reply["text"].strip(), (reply, s.lantern(".error"))
    assert reply["deltas"] > 1
    assert "Paris" in reply["text"]
    assert s.page.locator("#privacy").inner_text() == "Sent to server"
    assert s.page.locator(".message.assistant").last.inner_text().strip()
