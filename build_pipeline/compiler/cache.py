"""Content-addressed cache of compiled model libraries: <cache_dir>/model-libs/<key>/.

The key hashes everything that changes the library: the model config values, the quantization,
the profile (and its revision), context/prefill settings, the target, the TVM / tvm-ffi / emcc
versions and the compiler's own source files. An entry is a directory holding the library file and
`info.json`; it is built in a temp dir and renamed into place, so an entry is complete or absent.
Every build or reuse marks the entry as used; once the cache outgrows $LANTERN_LIB_CACHE_MAX_MB
(default 2048), the least recently used entries are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from functools import cache
from importlib import metadata
from pathlib import Path

from build_pipeline.paths import cache_dir

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Source files whose content is part of every key (the compiler, the model definitions, the
# quantization layout constants the kernels hard-code, and what `_metadata` declares).
FINGERPRINT_GLOBS = (
    "compiler/**/*.py",
    "compiler/runtime_support/**/*",
    "families/**/*.py",
    "nn/**/*.py",
    "quantization.py",
    "gpu_needs.py",
    "model_package.py",
    "weight_formats.py",
    "contract.py",
)  # web-llm's device floor: the kernels' limits
# The verification harness does not change what is compiled.
FINGERPRINT_EXCLUDE = ("compiler/verify.py",)
INFO_FILE = "info.json"
DEFAULT_MAX_MB = 2048
# An entry used this recently is never pruned: another build may be copying its library right now.
PRUNE_GRACE_SECONDS = 3600


@cache
def compiler_fingerprint() -> str:
    h = hashlib.sha256()
    files = sorted(
        {
            p
            for g in FINGERPRINT_GLOBS
            for p in PACKAGE_ROOT.glob(g)
            if p.is_file()
            and "__pycache__" not in p.parts
            and str(p.relative_to(PACKAGE_ROOT)) not in FINGERPRINT_EXCLUDE
        }
    )
    for p in files:
        h.update(str(p.relative_to(PACKAGE_ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@cache
def toolchain_versions(with_emcc: bool) -> dict:
    versions = {"apache-tvm": metadata.version("apache-tvm"), "apache-tvm-ffi": metadata.version("apache-tvm-ffi")}
    if with_emcc:
        emcc = shutil.which("emcc")
        out = subprocess.run([emcc, "--version"], capture_output=True, text=True, check=True).stdout if emcc else ""
        versions["emcc"] = out.splitlines()[0] if out else "missing"
    return versions


def library_key(kind: str, config: dict, scheme_name: str, settings: dict, profile_revision: int) -> tuple[str, dict]:
    """(hex key, the JSON-able description it hashes)."""
    desc = {
        "kind": kind,
        "model_config": config,
        "quantization": scheme_name,
        "settings": settings,
        "profile_revision": profile_revision,
        "toolchain": toolchain_versions(kind == "webgpu"),
        "compiler": compiler_fingerprint(),
    }
    key = hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return key, desc


def libs_root() -> Path:
    return cache_dir() / "model-libs"


def lookup(key: str, filename: str) -> tuple[Path, dict] | None:
    entry = libs_root() / key
    lib, info = entry / filename, entry / INFO_FILE
    if lib.is_file() and info.is_file():
        os.utime(info)  # last use, for pruning
        return lib, json.loads(info.read_text())
    return None


def _entry_bytes(entry: Path) -> int:
    return sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())


def prune(max_bytes: int | None = None, now: float | None = None) -> list[str]:
    """Remove least recently used entries until the cache fits in `max_bytes`; returns their keys."""
    if max_bytes is None:
        max_bytes = int(float(os.environ.get("LANTERN_LIB_CACHE_MAX_MB", DEFAULT_MAX_MB)) * 2**20)
    now = time.time() if now is None else now
    root = libs_root()
    if not root.is_dir():
        return []
    entries = []
    for entry in root.iterdir():
        info = entry / INFO_FILE
        if entry.is_dir() and not entry.name.startswith(".") and info.is_file():
            entries.append((info.stat().st_mtime, entry, _entry_bytes(entry)))
    total = sum(size for _, _, size in entries)
    removed = []
    for used, entry, size in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if now - used < PRUNE_GRACE_SECONDS:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        (root / f".{entry.name}.lock").unlink(missing_ok=True)
        total -= size
        removed.append(entry.name)
    return removed


@contextlib.contextmanager
def key_lock(key: str):
    """Serialise builds of one key across processes (others wait, then find the finished entry)."""
    root = libs_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def staged_entry(key: str):
    """Yield a temp dir; on success it becomes the cache entry for `key` in one rename."""
    root = libs_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
    try:
        yield tmp
        final = root / key
        if final.exists():  # a stale/partial entry (e.g. info.json missing): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
