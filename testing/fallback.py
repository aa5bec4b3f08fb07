"""Helpers for the server-fallback tests: the real SmolLM2 build, a real server on loopback, a real client.

Nothing here stands in for the code under test: apps come from `webapp.create_app`, requests cross a
TCP socket to werkzeug's threaded server, and the client is the standard library's http.client.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

MODEL_ID = "smollm2-135m-instruct"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def make_app(models_dir: Path, **config):
    """create_app with test-sized defaults: one llama.cpp thread per slot keeps two cores usable."""
    from webapp import create_app

    settings = {"MODELS_DIR": str(models_dir), "TESTING": True, "FALLBACK_THREADS": 1, **config}
    return create_app(settings)


@contextlib.contextmanager
def running(app):
    """Serve `app` with werkzeug's threaded server on 127.0.0.1:<free port>; yields a Client."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="fallback-test-server", daemon=True)
    thread.start()
    wait_for_engine(app)
    try:
        yield Client("127.0.0.1", server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        service = app.extensions.get("lantern_fallback")
        if service is not None:
            service.close()


def wait_for_engine(app, timeout: float = 120.0) -> str | None:
    """Wait until the site's engine process (started with the app) is ready or failed; its state then.

    Tests with a short request timeout would otherwise see the engine still loading."""
    service = app.extensions.get("lantern_fallback")
    process = getattr(service.engine, "process", None) if service is not None else None
    return process.wait(timeout) if process is not None else None


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes
    events: list = field(default_factory=list)  # parsed SSE `data:` payloads (dicts, or "[DONE]")

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        """Assistant text of a completion or of a stream."""
        if self.events:
            return "".join(
                e["choices"][0]["delta"].get("content", "")
                for e in self.events
                if isinstance(e, dict) and e.get("choices")
            )
        return self.json["choices"][0]["message"]["content"]


class Client:
    """`source`: the loopback address this client connects from (127.0.0.0/8 is all local), so one test
    can play several clients that the server tells apart by address."""

    def __init__(self, host: str, port: int, source: str | None = None, headers: dict | None = None):
        self.host, self.port, self.source = host, port, source
        self.default_headers = dict(headers or {})
        self.url = f"http://{host}:{port}"

    def as_client(self, source: str | None = None, headers: dict | None = None) -> Client:
        """Another client of the same server: from another loopback address and/or with other headers."""
        return Client(self.host, self.port, source, headers)

    def connection(self, timeout: float = 120):
        source = (self.source, 0) if self.source else None
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout, source_address=source)

    def request(
        self, method: str, path: str, body=None, headers=None, raw: bytes | None = None, timeout: float = 120
    ) -> Reply:
        conn = self.connection(timeout)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        extra = {**self.default_headers, **(headers or {})}
        hdrs = {"Content-Type": "application/json", **extra} if data is not None else extra
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
        finally:
            conn.close()
        if reply.headers.get("content-type", "").startswith("text/event-stream"):
            reply.events = parse_sse(reply.body)
        return reply

    def chat(self, headers=None, **body) -> Reply:
        body.setdefault("model", MODEL_ID)
        return self.request("POST", "/v1/chat/completions", body, headers)

    def get(self, path: str, headers=None) -> Reply:
        return self.request("GET", path, headers=headers)

    def metrics(self, headers=None) -> dict:
        return parse_metrics(self.get("/metrics", headers).body.decode())

    def open_stream(self, **body) -> OpenStream:
        """Start a streaming chat; read it piece by piece with read_events(stream.response, n)."""
        body.setdefault("model", MODEL_ID)
        body["stream"] = True
        return self.open("POST", "/v1/chat/completions", body)

    def open(self, method: str, path: str, body) -> OpenStream:
        stream = self.send(method, path, body)
        stream.response = stream.conn.getresponse()
        return stream

    def send(self, method: str, path: str, body) -> OpenStream:
        """Send a request without waiting for its answer (e.g. one that will queue); read it later with
        `stream.conn.getresponse()`, or drop it with `stream.abort()`."""
        conn = self.connection()
        conn.request(
            method, path, body=json.dumps(body), headers={"Content-Type": "application/json", **self.default_headers}
        )
        sock = conn.sock  # http.client drops it from `conn` once the response says "Connection: close"
        return OpenStream(sock, conn, None)

    def send_chat(self, **body) -> OpenStream:
        body.setdefault("model", MODEL_ID)
        return self.send("POST", "/v1/chat/completions", body)


@dataclass
class OpenStream:
    sock: socket.socket
    conn: http.client.HTTPConnection
    response: http.client.HTTPResponse | None

    def abort(self) -> None:
        """Drop the connection the way a closed browser tab does: a reset, nothing more read."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        if self.response is not None:
            self.response.close()  # it holds its own reference to the socket
        self.conn.close()
        self.sock.close()


def parse_sse(raw: bytes) -> list:
    events = []
    for block in raw.decode().split("\n\n"):
        block = block.strip()
        if not block:
            continue
        assert block.startswith("data: "), block[:80]
        data = block[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def read_events(resp, n: int) -> list:
    """Read `n` SSE events from an open streaming response."""
    events = []
    while len(events) < n:
        line = resp.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            data = line[6:].strip()
            events.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return events


def parse_metrics(text: str) -> dict:
    """{(name, frozenset(labels.items())): value} for every sample."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def metric(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, lbl), v in samples.items() if n == name and set(labels.items()) <= set(lbl))


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
