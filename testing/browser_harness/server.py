"""Loopback HTTP server for the web-llm harness page and built variants.

Layout (what web-llm expects, see docs/webllm_contract.md §1):
  /                              harness page (index.html, harness.js)
  /vendor/web-llm/index.js       the stock @mlc-ai/web-llm 0.2.86 bundle
  /models/<name>/resolve/main/*  files of a built variant dir
"""

from __future__ import annotations

import contextlib
import mimetypes
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from build_pipeline.manifest import read_manifest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WEBLLM_CANDIDATES = (
    REPO / "static" / "vendor" / "web-llm" / "index.js",
    REPO / "node_modules" / "@mlc-ai" / "web-llm" / "lib" / "index.js",
)
TYPES = {
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".html": "text/html",
    ".bin": "application/octet-stream",
}


def find_webllm() -> Path | None:
    for p in WEBLLM_CANDIDATES:
        if p.is_file():
            return p
    return None


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, routes: dict, webllm: Path, **kwargs):
        self.routes, self.webllm = routes, webllm
        super().__init__(*args, directory=str(HERE), **kwargs)

    def log_message(self, *_):  # keep test output quiet
        pass

    def _resolve(self) -> Path | None:
        path = unquote(urlsplit(self.path).path)
        if path == "/vendor/web-llm/index.js":
            return self.webllm
        if path.startswith("/models/"):
            parts = path.split("/")
            # /models/<name>/resolve/main/<file>
            if len(parts) == 6 and parts[3:5] == ["resolve", "main"] and parts[2] in self.routes:
                root = self.routes[parts[2]]
                target = (root / parts[5]).resolve()
                if target.parent == root.resolve() and target.is_file():
                    return target
            return None
        if path in ("/", "/index.html"):
            return HERE / "index.html"
        if path == "/harness.js":
            return HERE / "harness.js"
        return None

    def do_GET(self):
        target = self._resolve()
        if target is None:
            self.send_error(404)
            return
        data = target.read_bytes()
        self.send_response(200)
        self.send_header(
            "Content-Type", TYPES.get(target.suffix, mimetypes.guess_type(target.name)[0] or "application/octet-stream")
        )
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


class HarnessServer:
    """`with HarnessServer({"tiny": variant_dir}) as srv: srv.url` -> http://127.0.0.1:<port>"""

    def __init__(self, routes: dict[str, Path] | None = None, webllm: Path | None = None):
        self.routes = {k: Path(v) for k, v in (routes or {}).items()}
        self.webllm = webllm or find_webllm()
        if self.webllm is None:
            raise FileNotFoundError("web-llm bundle not found; run `make static/vendor/web-llm/index.js`")
        handler = partial(_Handler, routes=self.routes, webllm=self.webllm)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, name: str, variant_dir: Path) -> str:
        """Serve a variant dir; returns the model URL to give web-llm."""
        self.routes[name] = Path(variant_dir)
        return f"{self.url}/models/{name}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def harness_page(server: HarnessServer, browser, timeout_ms: int = 900_000):
    """A page on the harness in a fresh context of `browser` (launched with WebGPU: chromium.launch)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        logs: list[str] = []
        page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
        page.goto(server.url + "/")
        page.wait_for_function("window.lantern && window.lantern.ready")
        page.lantern_logs = logs  # type: ignore[attr-defined]
        yield page
    finally:
        context.close()


# web-llm chat options that make it decode greedily (the CPU build's greedy answer is the yardstick).
GREEDY = {"temperature": 0, "top_p": 1, "repetition_penalty": 1, "frequency_penalty": 0, "presence_penalty": 0}


def load_variant(
    page, server, name: str, variant: Path, library: str = "software_library", package: bool = False
) -> dict:
    """Load a built variant with one of its libraries (SwiftShader is a software adapter: by default
    the library built for software adapters, as the site's page would pick). package=True goes through
    web-llm's model-package path (mlc-model-manifest.json + `_metadata.artifact`), the plain contract otherwise."""
    url = server.add(name, variant)
    manifest = read_manifest(variant)
    lib = getattr(manifest, library)["file"]
    # chatOpts only matter for forwardTokensAndSample (it samples with the config defaults);
    # chat requests pass the greedy settings explicitly.
    args = {"modelId": name, "modelUrl": url, "libUrl": f"{url}/resolve/main/{lib}", "chatOpts": GREEDY}
    if package:
        args["modelManifest"] = manifest.package_manifest
    loaded = page.evaluate("a => window.lantern.load(a)", args)
    assert loaded["packaged"] is package
    return loaded
