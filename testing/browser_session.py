"""What the Firefox and WebKit page tests share: PageSession's helpers (lantern(), wait_state(), ask(), ...)
on top of four primitives each engine's driver provides (goto, evaluate, click, fill), and a server-side
record of every request, body included, for the privacy checks."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import quote, quote_plus


class BrowserSession:
    """Subclasses implement goto(url), evaluate(js_function_source, arg), click(selector), fill(selector, text)."""

    name = "browser"

    def goto(self, url: str) -> None:
        raise NotImplementedError

    def evaluate(self, js: str, arg=None):
        raise NotImplementedError

    def click(self, selector: str) -> None:
        raise NotImplementedError

    def fill(self, selector: str, text: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ PageSession's helpers
    def lantern(self, expr: str = ""):
        """Read window.lantern<expr> as plain data."""
        return self.evaluate(f"() => window.lantern{expr} ?? null")

    def text(self, selector: str) -> str:
        return self.evaluate("(s) => document.querySelector(s).innerText", selector)

    def poll(self, js: str, arg=None, timeout: float = 10_000, interval: float = 0.2):
        """Evaluate (possibly async) `js` until it returns something truthy (or the time is up); returns it."""
        deadline = time.monotonic() + timeout / 1000
        while True:
            value = self.evaluate(js, arg)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(interval)

    def wait_for(self, js: str, arg=None, timeout: float = 60_000):
        value = self.poll(js, arg, timeout)
        if not value:
            raise TimeoutError(f"{self.name}: {js} stayed false for {timeout / 1000:.0f} s; {self.where()}")
        return value

    def where(self) -> str:
        """The page's state, error, load stages and last events in a few lines: what a timeout needs to be
        understood from a CI log (whose output is cut), without the whole catalog window.lantern holds."""
        got = self.evaluate(
            """() => { const l = window.lantern; if (!l) return null;
              return { state: l.state, error: l.error, load: l.load, download: l.download,
                       engine: l.engine, events: (l.events || []).slice(-12) }; }"""
        )
        return f"lantern: {json.dumps(got, default=str)[:4000]}"

    def wait_state(self, *states: str, timeout: float = 60_000) -> str:
        return self.wait_for(
            "(states) => window.lantern && states.includes(window.lantern.state) && window.lantern.state",
            list(states),
            timeout,
        )

    def set_greedy(self) -> None:
        """Temperature 0, as if the user moved the slider there."""
        self.evaluate("""() => { const t = document.getElementById('temperature');
            t.value = '0'; t.dispatchEvent(new Event('input')); }""")

    def ask(self, text: str, timeout: float = 120_000) -> dict:
        """Type `text`, send it, wait for the answer to finish; window.lantern.lastReply."""
        count = self.lantern(".replyCount")
        self.fill("#prompt", text)
        self.click("#send")
        self.wait_for("(n) => window.lantern.replyCount > n", count, timeout)
        return self.lantern(".lastReply")

    def resource_urls(self) -> list[str]:
        """What the page itself fetched, as the browser's Resource Timing saw it (main thread)."""
        return self.evaluate("() => performance.getEntriesByType('resource').map((e) => e.name)")


@dataclass
class SeenRequest:
    method: str
    path: str
    query: str
    headers: dict
    body: bytes


class RequestRecorder:
    """WSGI wrapper (for serve(..., wsgi_wrapper=recorder.wrap)) keeping every request whole: method,
    path, query, headers and body, as they reached the server. Browsers' own request logs cannot all
    show bodies (Firefox over BiDi cannot); the server sees everything that left the browser for it."""

    def __init__(self):
        self.seen: list[SeenRequest] = []

    def wrap(self, app):
        import io

        def wsgi(environ, start_response):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            headers = {k[5:].lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
            self.seen.append(
                SeenRequest(
                    environ["REQUEST_METHOD"],
                    environ.get("PATH_INFO", ""),
                    environ.get("QUERY_STRING", ""),
                    headers,
                    body,
                )
            )
            return app(environ, start_response)

        return wsgi


# The site's own routes: the page, its scripts and vendored engines, the model list and model files,
# the service worker and the web app manifest.
OWN_PATHS = ("/static/", "/models/", "/api/models")
OWN_FILES = ("/", "/sw.js", "/manifest.webmanifest", "/favicon.ico")


def assert_private(recorder: RequestRecorder, texts: list[str]) -> None:
    """Every request that reached the server was a GET (or HEAD) for the page's own files, no request asked
    the server to answer (/v1/), and no part of any request carried one of `texts`."""
    assert recorder.seen, "the server saw no requests at all"
    for r in recorder.seen:
        assert r.method in ("GET", "HEAD"), (r.method, r.path)
        assert r.path in OWN_FILES or r.path.startswith(OWN_PATHS), r.path
        assert not r.path.startswith("/v1/"), r.path
        for text in texts:
            for part in (r.path, r.query, *r.headers.values()):
                assert not [form for form in (text, quote(text), quote_plus(text)) if form in part], (r.path, text)
            assert text.encode() not in r.body, (r.path, text)
