"""MLC `tensor-cache.json` + `params_shard_*.bin`: write tensors as they stream in, read them back.

The record layout is what web-llm's runtime parses; `sha256` per shard is Lantern's addition (the page
verifies downloads with it; web-llm ignores unknown fields).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from build_pipeline.contract import SHARD_PREFIX, TENSOR_CACHE_FILE
from build_pipeline.errors import BuildError

SHARD_BYTES = 32 * 1024 * 1024


class ShardWriter:
    """Appends tensors to ~32 MiB shards; a tensor never straddles two shards."""

    def __init__(self, out_dir: Path, shard_bytes: int = SHARD_BYTES):
        self.out_dir = out_dir
        self.shard_bytes = shard_bytes
        self.shards: list[dict] = []
        self._pending: list[tuple[dict, bytes]] = []
        self._pending_bytes = 0
        self.param_count = 0
        self.param_bytes = 0

    def add(
        self,
        name: str,
        array: np.ndarray,
        logical_params: int,
        weight_format: str | None = None,
        source_type: str | None = None,
    ) -> None:
        """Queue one tensor. `logical_params` counts model parameters it encodes (for bits/param);
        `weight_format` (weight_formats.py) is recorded on each stored tensor of a linear/embedding,
        `source_type` the GGUF block type it was imported from losslessly (web-llm ignores both)."""
        data = np.ascontiguousarray(array).tobytes()
        if self._pending and self._pending_bytes + len(data) > self.shard_bytes:
            self._flush()
        record = {
            "name": name,
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "format": "raw",
            "nbytes": len(data),
            "byteOffset": self._pending_bytes,
        }
        if weight_format:
            record["weight_format"] = weight_format
        if source_type:
            record["source_type"] = source_type
        self._pending.append((record, data))
        self._pending_bytes += len(data)
        self.param_count += logical_params
        self.param_bytes += len(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        name = f"{SHARD_PREFIX}{len(self.shards)}.bin"
        md5, sha = hashlib.md5(), hashlib.sha256()
        with open(self.out_dir / name, "wb") as f:
            for _, data in self._pending:
                f.write(data)
                md5.update(data)
                sha.update(data)
        self.shards.append(
            {
                "dataPath": name,
                "format": "raw-shard",
                "nbytes": self._pending_bytes,
                "records": [r for r, _ in self._pending],
                "md5sum": md5.hexdigest(),
                "sha256": sha.hexdigest(),
            }
        )
        self._pending, self._pending_bytes = [], 0

    def finish(self) -> dict:
        """Flush the last shard and write tensor-cache.json; returns its content."""
        self._flush()
        index = {
            "metadata": {
                "ParamSize": self.param_count,
                "ParamBytes": self.param_bytes,
                "BitsPerParam": 8.0 * self.param_bytes / max(self.param_count, 1),
            },
            "records": self.shards,
        }
        (self.out_dir / TENSOR_CACHE_FILE).write_text(json.dumps(index, indent=1))
        return index


def read_index(variant_dir: Path) -> dict:
    path = Path(variant_dir) / TENSOR_CACHE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BuildError(
            f"{path} does not exist", "build the model first (python -m build_pipeline build ...)"
        ) from None


def read_formats(variant_dir: Path) -> dict[str, str]:
    """{weight base name: format name} recorded in a variant's tensor cache."""
    out = {}
    for shard in read_index(variant_dir)["records"]:
        for rec in shard["records"]:
            if "weight_format" in rec:
                out[rec["name"].rsplit(".", 1)[0]] = rec["weight_format"]
    return out


def read_tensor(shard_path: Path, record: dict, rows: tuple[int, int] | None = None) -> np.ndarray:
    """One tensor of a shard (or its rows [start, stop) of the first axis), by a plain file read rather
    than a memory map: the bytes leave the process with the array instead of staying resident as mapped
    pages (peak build memory, issue 12)."""
    shape = list(record["shape"])
    start, stop = rows if rows is not None else (0, shape[0] if shape else 1)
    row_items = int(np.prod(shape[1:])) if shape else 1
    dtype = np.dtype(record["dtype"])
    offset = record["byteOffset"] + start * row_items * dtype.itemsize
    data = np.fromfile(shard_path, dtype=dtype, count=(stop - start) * row_items, offset=offset)
    return data.reshape([stop - start, *shape[1:]] if shape else [])


def iter_tensors(variant_dir: Path):
    """Yield (name, array) for every tensor in a built variant, one tensor read at a time."""
    variant_dir = Path(variant_dir)
    for shard in read_index(variant_dir)["records"]:
        for rec in shard["records"]:
            yield rec["name"], read_tensor(variant_dir / shard["dataPath"], rec)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def file_md5(path: Path) -> str:
    return file_digest(path, "md5")
