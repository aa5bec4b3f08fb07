"""How proxy mode relays what an upstream refuses, against a small real HTTP server on loopback that
answers with fixed statuses and bodies (the failure modes llama.cpp/vLLM servers produce)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from testing.fallback import FRANCE, make_app, running

ANSWERS = {
    "bad": (400, {"Content-Type": "application/json"}, {"error": {"message": "prompt too long for model"}}),
    "busy": (429, {"Content-Type": "application/json", "Retry-After": "7"}, {"error": {"message": "slow down"}}),
    "auth": (401, {"Content-Type": "application/json"}, {"error": {"message": "invalid api key"}}),
    "broken": (500, {"Content-Type": "text/plain"}, "Internal Server Error"),
    "garbage": (200, {"Content-Type": "text/event-stream"}, "data: {not json\n\n"),
}


class Canned(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        Canned.seen.append((self.path, dict(self.headers), body))
        status, headers, payload = ANSWERS[self.server.mode]
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def canned():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    server.mode = "bad"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Canned.seen.clear()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def models(smollm2_models):
    return smollm2_models


@pytest.mark.parametrize(
    "mode,status,retry_after",
    [
        ("bad", 400, None),
        ("busy", 429, "7"),
        ("auth", 502, None),
        ("broken", 502, None),
        ("garbage", 502, None),
    ],
)
def test_upstream_answers_are_relayed(canned, models, mode, status, retry_after):
    canned.mode = mode
    base = f"http://127.0.0.1:{canned.server_address[1]}"  # bare host:port means <base>/v1
    with running(make_app(models, FALLBACK_UPSTREAM=base, FALLBACK_UPSTREAM_API_KEY="up-secret")) as c:
        r = c.chat(messages=FRANCE, max_tokens=4, temperature=0)
        assert r.status == status
        err = r.json["error"]
        assert err["code"] == "upstream_error" and set(err) == {"message", "type", "param", "code"}
        if mode == "bad":
            assert "prompt too long for model" in err["message"]
        assert r.headers.get("retry-after") == retry_after
    path, headers, body = Canned.seen[-1]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer up-secret"
    assert body["stream"] is True and body["max_tokens"] == 4 and body["temperature"] == 0
    assert body["messages"] == FRANCE and "<|im_end|>" in body["stop"]  # the model's stop string rides along
