"""Built model variants on disk, and the routes that serve their files to the browser.

URL layout (web-llm appends `resolve/main/` to any model URL without a `/resolve/<rev>/` segment):

    /models/<model>/<quant>/resolve/<revision>/<file>   revision = hash of the manifest: immutable
    /models/<model>/<quant>/resolve/main/<file>         always the current build: revalidate (ETag)
    /models/<model>/<quant>/<file>                      same as resolve/main

Only files listed in the variant's lantern-manifest.json (plus the manifest itself) are
served; the URL parts are looked up in a dict built from the directory scan, never joined into a path
as given, so traversal has nothing to reach.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from flask import Blueprint, abort, current_app, send_file

from build_pipeline.contract import (
    CHAT_CONFIG_FILE,
    CPU_TIER_PARTS_DIR,
    MANIFEST_FILE,
    CpuTierNeeds,
    FileEntry,
    LibraryEntry,
    Manifest,
    parse_manifest,
)

CURRENT_REVISION = "main"
REVISION_CHARS = 16
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

MIME_TYPES = {".wasm": "application/wasm", ".json": "application/json"}
DEFAULT_MIME = "application/octet-stream"

bp = Blueprint("artifacts", __name__)


def mime_type(name: str) -> str:
    return MIME_TYPES.get(Path(name).suffix.lower(), DEFAULT_MIME)


@dataclass
class Variant:
    """One built variant: its manifest plus what the site derives from it (revision, servable files)."""

    model: str
    quantization: str
    directory: Path
    manifest: Manifest
    revision: str
    # path -> {"path", "bytes", "sha256"}: every file the browser may ask for.
    files: dict[str, FileEntry] = field(default_factory=dict)
    # Sampling defaults from the variant's mlc-chat-config.json (the model config's [generation]).
    generation: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.manifest.id

    def base_path(self, revision: str | None = None) -> str:
        """Site-relative weights URL, already carrying a `/resolve/<rev>/` segment web-llm keeps as is."""
        return f"/models/{self.model}/{self.quantization}/resolve/{revision or self.revision}/"

    @property
    def library_file(self) -> str | None:
        """The WebGPU library for real GPUs."""
        return _file_of(self.manifest.library)

    def file_path(self, name: str) -> Path | None:
        entry = self.files.get(name)
        return self.directory / entry["path"] if entry else None


CPU_TIER = "cpu"  # URL segment of a model's CPU tier (never a quantization name)
CPU_TIER_FILES = (CHAT_CONFIG_FILE,)  # served beside the GGUF: the page formats prompts from its conv_template


@dataclass
class CpuTier:
    """A model's in-browser CPU tier: its GGUF (the server's) and the chat config, served under
    /models/<model>/cpu/resolve/<revision>/ like a variant, verified by the page the same way."""

    model: str
    needs: CpuTierNeeds  # the manifest's cpu_tier block
    revision: str
    files: dict[str, FileEntry]  # name -> {"path", "bytes", "sha256"} (what the page sees): GGUF parts first
    sources: dict[str, Path]  # name -> absolute Path on disk

    @property
    def id(self) -> str:
        return f"{self.model}-{CPU_TIER}"

    def base_path(self) -> str:
        return f"/models/{self.model}/{CPU_TIER}/resolve/{self.revision}/"

    def file_path(self, name: str) -> Path | None:
        return self.sources.get(name)


def _file_of(library: LibraryEntry | None) -> str | None:
    return library["file"] if library else None


def cpu_tier_of(variant: Variant) -> CpuTier | None:
    """The CPU tier described by one variant's manifest, if its GGUF parts are really there beside it.

    The parts (the model's own model.gguf, or its gguf-split parts in <model>/cpu-gguf/) are served by
    their file names, in the manifest's order: the order wllama loads them in.
    """
    needs = variant.manifest.cpu_tier
    if needs is None:
        return None
    gguf = needs["gguf"]
    parts = needs.get("parts") or [{"path": gguf["path"], "bytes": gguf["bytes"], "sha256": gguf["sha256"]}]
    model_dir = variant.directory.parent.resolve()
    files: dict[str, FileEntry] = {}
    sources: dict[str, Path] = {}
    for part in parts:
        source = (variant.directory / part["path"]).resolve()
        # only the model's own model.gguf or its parts
        if source.parent not in (model_dir, model_dir / CPU_TIER_PARTS_DIR) or not source.is_file():
            return None
        name = source.name
        if name in files or name in CPU_TIER_FILES:
            return None
        files[name] = {"path": name, "bytes": part["bytes"], "sha256": part["sha256"]}
        sources[name] = source
    for extra in CPU_TIER_FILES:
        entry = variant.files.get(extra)
        if entry is None:
            return None
        files[extra] = {"path": entry["path"], "bytes": entry["bytes"], "sha256": entry["sha256"]}
        sources[extra] = variant.directory / entry["path"]
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return CpuTier(variant.model, needs, digest[:REVISION_CHARS], files, sources)


def _load_variant(directory: Path, model: str, quantization: str) -> Variant:
    raw = (directory / MANIFEST_FILE).read_bytes()
    # The contract checks the manifest's shape, and that it lists only plain names in the variant dir.
    manifest = parse_manifest(raw)
    files: dict[str, FileEntry] = {
        f["path"]: {"path": f["path"], "bytes": f["bytes"], "sha256": f["sha256"]} for f in manifest.files
    }
    digest = hashlib.sha256(raw).hexdigest()
    files[MANIFEST_FILE] = {"path": MANIFEST_FILE, "bytes": len(raw), "sha256": digest}
    return Variant(
        model, quantization, directory, manifest, digest[:REVISION_CHARS], files, _generation_defaults(directory)
    )


GENERATION_KEYS = ("temperature", "top_p", "repetition_penalty", "presence_penalty", "frequency_penalty")


def _generation_defaults(directory: Path) -> dict:
    try:
        chat = json.loads((directory / CHAT_CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: chat[k] for k in GENERATION_KEYS if isinstance(chat.get(k), (int, float))}


class ArtifactStore:
    """Scans MODELS_DIR/<model>/<quant>/lantern-manifest.json; re-reads a manifest only when it changes.

    A rebuild replaces a variant dir with one rename, so (inode, mtime, size) of the manifest is a
    reliable change signal and a request never sees half a build.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._cache: dict[Path, tuple[tuple, Variant]] = {}
        self._lock = threading.Lock()

    def check(self) -> tuple[bool, dict]:
        """Is the artifacts dir readable? Detail says what was looked at (for /healthz)."""
        detail: dict[str, object] = {"models_dir": str(self.root)}
        try:
            os.listdir(self.root)
        except OSError as exc:
            detail["error"] = exc.strerror or str(exc)
            return False, detail
        variants, broken = self.scan(collect_errors=True)
        detail["variants"] = len(variants)
        detail["with_library"] = sum(1 for v in variants if v.library_file)
        if broken:
            detail["unreadable_manifests"] = broken
        return True, detail

    def scan(self, collect_errors: bool = False):
        variants, broken = [], []
        try:
            model_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            model_dirs = []
        for model_dir in model_dirs:
            try:
                quant_dirs = sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for quant_dir in quant_dirs:
                if not (quant_dir / MANIFEST_FILE).is_file():
                    continue
                try:
                    variants.append(self._variant(quant_dir, model_dir.name, quant_dir.name))
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    current_app.logger.warning("skipping %s: unreadable manifest (%s)", quant_dir, exc)
                    broken.append(f"{model_dir.name}/{quant_dir.name}")
        return (variants, broken) if collect_errors else variants

    def _variant(self, directory: Path, model: str, quantization: str) -> Variant:
        st = (directory / MANIFEST_FILE).stat()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(directory)
            if hit and hit[0] == key:
                return hit[1]
        variant = _load_variant(directory, model, quantization)
        with self._lock:
            self._cache[directory] = (key, variant)
        return variant

    def get(self, model: str, quantization: str) -> Variant | CpuTier | None:
        if quantization == CPU_TIER:
            return self.cpu_tier(model)
        for variant in self.scan():
            if variant.model == model and variant.quantization == quantization:
                return variant
        return None

    def cpu_tier(self, model: str) -> CpuTier | None:
        """The model's CPU tier, from the first of its variants that describes one."""
        for variant in self.scan():
            if variant.model == model:
                tier = cpu_tier_of(variant)
                if tier is not None:
                    return tier
        return None


def store() -> ArtifactStore:
    return current_app.extensions["lantern_artifacts"]


def _serve(model: str, quantization: str, revision: str, filename: str):
    variant = store().get(model, quantization)
    if variant is None:
        abort(404)
    entry = variant.files.get(filename)
    if entry is None:
        abort(404)
    if revision not in (CURRENT_REVISION, variant.revision):
        # An old revision's bytes are gone; serving today's bytes under it would break `immutable`.
        abort(404)
    path = variant.file_path(filename)
    if path is None or not path.is_file():
        abort(404)
    # The manifest's SHA-256 is the content identity: an honest strong validator.
    response = send_file(
        path, mimetype=mime_type(filename), etag=entry["sha256"], conditional=True, max_age=None, last_modified=None
    )
    response.headers["Cache-Control"] = IMMUTABLE if revision == variant.revision else REVALIDATE
    return response


@bp.get("/models/<model>/<quantization>/resolve/<revision>/<filename>")
def resolved_file(model: str, quantization: str, revision: str, filename: str):
    return _serve(model, quantization, revision, filename)


@bp.get("/models/<model>/<quantization>/<filename>")
def current_file(model: str, quantization: str, filename: str):
    return _serve(model, quantization, CURRENT_REVISION, filename)


def init_app(app) -> None:
    app.extensions["lantern_artifacts"] = ArtifactStore(Path(app.config["MODELS_DIR"]))
    app.register_blueprint(bp)
