"""Local-first in real Chromium: the service worker keeps the app shell, so a returning visitor whose model is
verified in the browser chats with the server switched off; a new build of the app replaces the cached one
on the next visit; the page is installable (web app manifest, icons, CSP-clean)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
from pathlib import Path

import pytest

from testing.fixtures import _Recorder

pytestmark = pytest.mark.browser

GERMANY = "What is the capital of Germany?"
SHELL = """async () => {
  const r = await navigator.serviceWorker.getRegistration();
  if (!r || !r.active || r.active.state !== 'activated' || !navigator.serviceWorker.controller) return null;
  return (await caches.keys()).filter((k) => k.startsWith('lantern-shell-'));
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """The site on a fixed loopback port, so it can be stopped and started again on the same origin (a
    service worker belongs to its origin)."""

    def __init__(self, port: int, models: Path, static: Path | None = None):
        from werkzeug.serving import make_server

        from webapp import create_app

        self.app = create_app({"MODELS_DIR": str(models), "TESTING": True, "FALLBACK_PRELOAD": False})
        if static is not None:
            self.app.static_folder = str(static)  # a "deployed" copy of the app files
        self.hits: list = []
        self.server = make_server("127.0.0.1", port, _Recorder(self.app.wsgi_app, self.hits), threaded=True)
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@contextlib.contextmanager
def site(port: int, models: Path, static: Path | None = None):
    running = Site(port, models, static)
    try:
        yield running
    finally:
        running.stop()


def wait_shell(s, timeout: float = 60_000) -> list[str]:
    """The worker of this page's build is active, controls the page and holds only this build's cache."""
    build = s.lantern(".build")
    assert build
    caches = s.poll(
        "async () => { const c = await (" + SHELL + ")(); "
        "return c && c.length === 1 && c[0] === 'lantern-shell-' + window.lantern.build ? c : null; }",
        timeout=timeout,
    )
    assert caches == [f"lantern-shell-{build}"], caches
    return caches


def record_responses(s) -> list:
    seen: list = []
    s.page.on("response", lambda r: seen.append((r.url, r.status, r.from_service_worker)))
    return seen


@pytest.mark.slow
def test_a_returning_visitor_chats_with_the_server_switched_off(chromium, smollm2_models):
    port = free_port()
    s = chromium(webgpu=False, tier=None)
    with site(port, smollm2_models) as server:
        s.page.goto(server.url + "/")
        s.wait_state("needs-download")
        assert s.lantern(".offline") is False
        assert s.page.locator("#offline").is_hidden()
        s.page.click("#download-button")
        assert s.wait_state("ready", "engine-failed", "download-failed", timeout=180_000) == "ready", s.lantern(
            ".error"
        )
        s.set_greedy()
        assert "Berlin" in s.ask(GERMANY)["text"]
        wait_shell(s)
        # The worker never handled an API answer: nothing of /api or /models is in its cache.
        cached = s.page.evaluate("""async () => (await (await caches.open('lantern-shell-' + window.lantern.build))
            .keys()).map((r) => new URL(r.url).pathname)""")
        assert "/" in cached and "/static/js/app.js" in cached and "/static/vendor/wllama/index.js" in cached
        assert "/static/vendor/web-llm/index.js" in cached and "/static/icons/lantern-192.png" in cached
        assert not [p for p in cached if p.startswith(("/api/", "/v1/", "/models/", "/sw.js"))]
        hits_before_stop = len(server.hits)

    # The server is gone. Reload: the page comes from the service worker and the model from browser storage.
    responses = record_responses(s)
    s.page.reload()
    assert s.wait_state("ready", "engine-failed", "error", timeout=180_000) == "ready", s.lantern(".error")
    assert s.lantern(".offline") is True
    assert s.page.locator("#offline").inner_text() == "Offline — answers still come from this device"
    server_option = s.page.locator('#mode option[value="server"]')
    assert server_option.evaluate("(o) => o.disabled && o.hidden")
    assert s.lantern(".storedCheck.damaged") == []  # still re-hashed against the manifest before use
    assert s.lantern(".capabilities.wasm.isolated") is True  # the cached page keeps its COOP/COEP headers
    reply = s.ask("What is the capital of France?")
    assert reply["finishReason"] in ("stop", "length") and reply["text"].strip(), reply
    assert reply["stats"]["tier"] == "cpu"

    # No app code came from the network: every page and script answer came from the service worker.
    app_code = [(u, code, sw) for u, code, sw in responses if "/static/" in u or u.rstrip("/") == server.url]
    assert app_code and all(code == 200 and sw for _, code, sw in app_code), app_code
    assert not [u for u, code, sw in responses if not sw and code and u.startswith(server.url)]
    assert len(server.hits) == hits_before_stop
    assert s.lantern(".cspViolations") == []


def test_a_new_build_replaces_the_cached_app_on_the_next_visit(chromium, tiny_site_models, tmp_path):
    port = free_port()
    s = chromium(webgpu=False, tier=None)
    with site(port, tiny_site_models) as server:
        s.page.goto(server.url + "/")
        s.wait_state("needs-download")
        old = s.lantern(".build")
        wait_shell(s)

    # Deploy: a changed app file, served by a restarted site on the same origin.
    static = tmp_path / "static"
    shutil.copytree(Path(server.app.static_folder), static)
    app_js = static / "js" / "app.js"
    app_js.write_text(app_js.read_text() + '\nwindow.lanternDeployed = "v2";\n')
    with site(port, tiny_site_models, static) as server:
        s.page.goto(server.url + "/")
        s.wait_state("needs-download")
        new = s.lantern(".build")
        assert new != old
        assert s.page.evaluate("() => window.lanternDeployed") == "v2"  # the new code, not the cached one
        wait_shell(s)  # the new build's cache, the old one deleted
        sw = s.page.evaluate("async () => (await (await fetch('/sw.js')).text()).split('\\n')[0]")
        assert new in sw

    # Offline now, the cached app is the new one.
    s.page.reload()
    s.wait_state("needs-download")
    assert s.lantern(".offline") is True and s.lantern(".build") == new
    assert s.page.evaluate("() => window.lanternDeployed") == "v2"


def test_the_page_is_installable_and_csp_clean(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=False, tier=None)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    wait_shell(s)
    cdp = s.context.new_cdp_session(s.page)
    manifest = cdp.send("Page.getAppManifest")
    assert manifest["url"] == server.url + "/manifest.webmanifest" and not manifest["errors"], manifest
    data = json.loads(manifest["data"])  # what Chromium read
    assert data["display"] == "standalone" and data["name"].startswith("Lantern") and data["start_url"] == "/"
    assert {icon["type"] for icon in data["icons"]} >= {"image/svg+xml", "image/png"}
    # Playwright's contexts are incognito profiles, which Chromium never installs from; nothing else is missing.
    errors = {e["errorId"] for e in cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]}
    assert errors <= {"in-incognito"}, errors
    for icon in data["icons"]:
        assert s.page.evaluate("async (u) => (await fetch(u)).status", icon["src"]) == 200
    assert s.lantern(".cspViolations") == []
    assert not [m for m in s.console if m.startswith("error")], s.console
    # A service worker with the root scope, from this origin only.
    scope = s.page.evaluate("async () => (await navigator.serviceWorker.getRegistration()).scope")
    assert scope == server.url + "/"
