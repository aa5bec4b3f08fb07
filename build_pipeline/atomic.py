"""Write-then-rename helpers: a build is either complete on disk or absent, never half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from build_pipeline.errors import BuildError


def ensure_writable_dir(path: Path) -> None:
    """Create `path` (and parents) or explain why it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-", delete=True):
            pass
    except OSError as exc:
        raise BuildError(
            f"output directory {path} is not writable ({exc.strerror or exc})",
            "choose another directory with --out, or fix its permissions",
        ) from exc


@contextlib.contextmanager
def staged_dir(final: Path):
    """Yield a temp dir beside `final`; on success it replaces `final` in one rename.

    On any exception the temp dir is removed and `final` is left untouched.
    """
    created_parent = not final.parent.exists()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the finished dir should not be
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_parent:
            with contextlib.suppress(OSError):
                final.parent.rmdir()  # only if still empty
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_dir(src: Path, final: Path) -> None:
    """Move `src` to `final`, replacing an older `final` without a moment where neither is complete."""
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, trash / "old")
        os.replace(src, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, final)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a single file via a temp file + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
