"""Minimal safetensors reader on numpy memmaps: handles bf16 (numpy cannot) and detects truncation."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from build_pipeline.errors import BuildError

_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # widened to float32 on read
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "I8": np.int8,
    "U8": np.uint8,
}


class SafetensorsFile:
    def __init__(self, path: Path):
        self.path = path
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                if header_len > size - 8:
                    raise ValueError("header runs past the end of the file")
                header = json.loads(f.read(header_len))
        except (OSError, ValueError, struct.error) as exc:
            raise self._corrupt(f"unreadable header ({exc})") from None
        header.pop("__metadata__", None)
        self._base = 8 + header_len
        self._entries = header
        for name, e in header.items():
            start, end = e["data_offsets"]
            if self._base + end > size:
                raise self._corrupt(f"tensor {name} ends at byte {self._base + end} but the file has {size} bytes")
            if e["dtype"] not in _DTYPES:
                raise BuildError(
                    f"{path.name}: tensor {name} has dtype {e['dtype']}, which Lantern cannot read",
                    "provide float32/float16/bfloat16 safetensors weights",
                )

    def _corrupt(self, why: str) -> BuildError:
        return BuildError(
            f"safetensors file {self.path} is corrupt or truncated: {why}",
            "download the model again (delete the file so it is re-fetched)",
        )

    def names(self) -> list[str]:
        return list(self._entries)

    def load(self, name: str) -> np.ndarray:
        e = self._entries[name]
        start, end = e["data_offsets"]
        dtype = _DTYPES[e["dtype"]]
        raw = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._base + start, shape=(end - start,))
        arr = raw.view(dtype).reshape(e["shape"])
        if e["dtype"] == "BF16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        return np.asarray(arr, dtype=np.float32)
