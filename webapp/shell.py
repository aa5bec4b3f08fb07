"""The app shell for offline use and installation: /sw.js (service worker), /manifest.webmanifest.

One source of truth for the build: `shell_build()` hashes every static file the page may load (plus the
page template), so any change to the app gives a new version. The service worker is served from "/" (its
scope must cover the page) with that version and the file list written into its first line: a changed
app changes the worker's bytes, the browser installs the new worker, which fills a new cache and deletes
the old one. Model files are not part of the shell (they live in web-llm's own caches, verified).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Response, current_app, url_for

bp = Blueprint("shell", __name__)

SW_SOURCE = "js/sw.js"  # served at /sw.js (root scope), never precached under /static/
ICON_DIR = "icons"
MANIFEST = {
    "name": "Lantern — private chat on your device",
    "short_name": "Lantern",
    "description": "Chat with a language model that runs in your browser; nothing you type leaves the device.",
    "start_url": "/",
    "scope": "/",
    "display": "standalone",
    "background_color": "#fbfaf7",
    "theme_color": "#b57f00",
}
ICONS = (
    ("lantern.svg", "any", "image/svg+xml"),
    ("lantern-192.png", "192x192", "image/png"),
    ("lantern-512.png", "512x512", "image/png"),
)


@dataclass(frozen=True)
class ShellBuild:
    version: str
    files: tuple[str, ...]  # URLs the service worker precaches


_lock = threading.Lock()


def _shell_paths(static: Path) -> list[Path]:
    return sorted(p for p in static.rglob("*") if p.is_file() and not p.name.startswith("."))


def _fingerprint(paths: list[Path], template: Path) -> tuple:
    """Cheap change detector (path, size, mtime): the hashes are recomputed only when it moves."""
    return tuple((str(p), s.st_size, s.st_mtime_ns) for p in [*paths, template] for s in [p.stat()])


def shell_build() -> ShellBuild:
    """The current build of the app shell, cached per app until a file changes."""
    app = current_app
    assert app.static_folder and app.static_url_path is not None  # create_app always serves static/
    static = Path(app.static_folder)
    template = Path(app.root_path) / "templates" / "index.html"
    paths = _shell_paths(static)
    fingerprint = _fingerprint(paths, template)
    with _lock:
        cached = app.extensions.get("lantern_shell")
        if cached and cached[0] == fingerprint:
            return cached[1]
        digest = hashlib.sha256()
        named = [(p.relative_to(static).as_posix(), p) for p in paths] + [("templates/index.html", template)]
        for name, path in named:
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
        prefix = app.static_url_path.rstrip("/")
        files = ["/", "/manifest.webmanifest"] + [
            f"{prefix}/{p.relative_to(static).as_posix()}"
            for p in paths
            if p.relative_to(static).as_posix() != SW_SOURCE
        ]
        build = ShellBuild(digest.hexdigest()[:16], tuple(files))
        app.extensions["lantern_shell"] = (fingerprint, build)
        return build


@bp.get("/sw.js")
def service_worker():
    """The worker's script: this build's version and file list, then the static worker code."""
    build = shell_build()
    source = (Path(current_app.static_folder) / SW_SOURCE).read_text(encoding="utf-8")
    head = "self.LANTERN_SHELL = " + json.dumps({"version": build.version, "files": list(build.files)}) + ";\n"
    response = Response(head + source, mimetype="text/javascript")
    # The browser must see a new build at once (it also skips its HTTP cache for worker scripts).
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/manifest.webmanifest")
def web_manifest():
    icons = [
        {"src": url_for("static", filename=f"{ICON_DIR}/{name}"), "sizes": sizes, "type": mime, "purpose": "any"}
        for name, sizes, mime in ICONS
    ]
    response = Response(
        json.dumps({**MANIFEST, "icons": icons}, ensure_ascii=False), mimetype="application/manifest+json"
    )
    response.headers["Cache-Control"] = "no-cache"
    return response


def init_app(app) -> None:
    app.register_blueprint(bp)

    @app.context_processor
    def _shell_version() -> dict:
        return {"shell_version": shell_build().version}
