"""Split a GGUF into llama.cpp "gguf-split" parts, each at most a given number of bytes.

wllama (the in-browser CPU tier) reads each file of a model through one wasm32 `ftell`, so a file must
stay under 2 GiB, and its README recommends parts of at most 512 MB; llama.cpp loads such a split model
from its parts in order (`llama_model_load_from_splits`), or from the first part's name alone.

The layout is exactly `llama-gguf-split --split`'s:
- part i is named `<stem>-<i:05d>-of-<n:05d>.gguf` (1-based), the pattern llama.cpp derives the other
  names from (`llama_split_prefix`) and wllama sorts named files by;
- the first part carries every key/value of the source, then `split.no` (u16), `split.count` (u16) and
  `split.tensors.count` (i32); every other part carries only those three (plus `general.alignment`
  when the source's is not the default, since each part is read on its own);
- tensors keep the source's order and their exact bytes, each part holding a run of them; a tensor is
  never cut, so one larger than the limit gets a part to itself (the only way a part exceeds it).

Unlike gguf-split, the limit bounds the whole file (header, metadata and padding included), not only
the tensor data. Bytes are copied, never decoded: the parts are a pure function of the source file and
the limit (same input, same bytes: caches and content hashes stay valid across rebuilds), written and
hashed in one pass with a bounded buffer.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gguf.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VERSION,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
)

from build_pipeline.errors import BuildError

PART_NAME = "{stem}-{index:05d}-of-{count:05d}.gguf"
COPY_CHUNK = 8 * 1024**2
_HEADER_BYTES = 4 + 4 + 8 + 8  # magic, version, tensor count, kv count
_SPLIT_KEYS = (Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)


@dataclass(frozen=True)
class _Tensor:
    info_head: bytes  # name, n_dims, dims, type: the tensor info without its offset
    offset: int  # absolute offset of its data in the source file
    nbytes: int


@dataclass(frozen=True)
class Part:
    path: Path
    bytes: int
    sha256: str
    tensors: int


def part_names(stem: str, count: int) -> list[str]:
    return [PART_NAME.format(stem=stem, index=i + 1, count=count) for i in range(count)]


def _pad(n: int, alignment: int) -> int:
    return (alignment - n % alignment) % alignment


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, vtype: GGUFValueType, fmt: str, value: int) -> bytes:
    return _string(key) + struct.pack("<I", int(vtype)) + struct.pack("<" + fmt, value)


def _split_kvs(index: int, count: int, tensors: int) -> list[bytes]:
    return [
        _kv(Keys.Split.LLM_KV_SPLIT_NO, GGUFValueType.UINT16, "H", index),
        _kv(Keys.Split.LLM_KV_SPLIT_COUNT, GGUFValueType.UINT16, "H", count),
        _kv(Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, GGUFValueType.INT32, "i", tensors),
    ]


class _Source:
    """What a split needs of the source: its key/values as raw bytes, and where each tensor's bytes are.

    Read with a plain sequential parse of the header (not gguf.GGUFReader, whose numpy view per token
    and merge costs ~650 MB for a Llama-3 vocabulary): memory is the metadata's own few MB.
    """

    def __init__(self, path: Path):
        try:
            with open(path, "rb", buffering=1 << 20) as f:
                self._parse(f, path)
        except (OSError, ValueError, struct.error, KeyError) as exc:
            raise BuildError(f"cannot read {path} as GGUF ({exc})", "rebuild the model's GGUF") from None

    def _parse(self, f: BinaryIO, path: Path) -> None:
        magic, version, n_tensors, n_kv = struct.unpack("<IIQQ", _read(f, _HEADER_BYTES))
        if magic != GGUF_MAGIC:
            raise ValueError("not a GGUF file")
        if version not in (2, 3):  # the same little-endian layout; parts are written as version 3
            raise ValueError(f"GGUF version {version}")
        self.kvs: list[bytes] = []
        self.alignment = GGUF_DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            raw = bytearray()
            key = _take_string(f, raw).decode()
            (vtype,) = struct.unpack("<I", _take(f, 4, raw))
            value = _take_value(f, vtype, raw)
            if key in _SPLIT_KEYS:
                raise BuildError(f"{path} is already one part of a split GGUF", "split the whole model's GGUF")
            if key == Keys.General.ALIGNMENT:
                if vtype != GGUFValueType.UINT32 or not value or value & (value - 1):
                    raise ValueError(f"bad {key}")
                self.alignment = int(value)
            self.kvs.append(bytes(raw))
        # A part without the source's alignment key would be read with the default one.
        self.alignment_kv = (
            []
            if self.alignment == GGUF_DEFAULT_ALIGNMENT
            else [_kv(Keys.General.ALIGNMENT, GGUFValueType.UINT32, "I", self.alignment)]
        )
        infos = []
        for _ in range(n_tensors):
            head = bytearray()
            _take_string(f, head)
            (n_dims,) = struct.unpack("<I", _take(f, 4, head))
            dims = struct.unpack(f"<{n_dims}Q", _take(f, 8 * n_dims, head))
            (ggml_type,) = struct.unpack("<I", _take(f, 4, head))
            (offset,) = struct.unpack("<Q", _read(f, 8))
            block, type_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
            elements = 1
            for d in dims:
                elements *= d
            infos.append((bytes(head), offset, elements // block * type_bytes))
        data_start = f.tell() + _pad(f.tell(), self.alignment)
        self.tensors = [_Tensor(head, data_start + offset, nbytes) for head, offset, nbytes in infos]


_SCALAR_BYTES = {
    GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.BOOL: 1,
    GGUFValueType.UINT16: 2, GGUFValueType.INT16: 2,
    GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4,
    GGUFValueType.UINT64: 8, GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8,
}  # fmt: skip


def _read(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError("file ends inside the GGUF header")
    return data


def _take(f, n: int, raw: bytearray) -> bytes:
    data = _read(f, n)
    raw += data
    return data


def _take_string(f, raw: bytearray) -> bytes:
    (n,) = struct.unpack("<Q", _take(f, 8, raw))
    return _take(f, n, raw)


def _take_value(f, vtype: int, raw: bytearray) -> int | None:
    """Copies one value's bytes into `raw`; returns it when it is an integer scalar (else None)."""
    vtype = GGUFValueType(vtype)
    if vtype == GGUFValueType.STRING:
        _take_string(f, raw)
        return None
    if vtype == GGUFValueType.ARRAY:
        item, count = struct.unpack("<IQ", _take(f, 12, raw))
        item = GGUFValueType(item)
        if item in _SCALAR_BYTES:
            _take(f, _SCALAR_BYTES[item] * count, raw)
        else:
            for _ in range(count):
                _take_value(f, item, raw)
        return None
    data = _take(f, _SCALAR_BYTES[vtype], raw)
    return int.from_bytes(data, "little") if vtype == GGUFValueType.UINT32 else None


def _part_bytes(kvs: list[bytes], tensors: list[_Tensor], alignment: int) -> int:
    meta = _HEADER_BYTES + sum(map(len, kvs)) + sum(len(t.info_head) + 8 for t in tensors)
    return meta + _pad(meta, alignment) + sum(t.nbytes + _pad(t.nbytes, alignment) for t in tensors)


def plan(source: _Source, max_bytes: int) -> list[list[_Tensor]]:
    """Runs of tensors, in order, each part's whole file within `max_bytes` (a lone tensor may exceed it).

    The three split keys have a fixed size, so counting them before the number of parts is known is exact.
    """
    split_kvs = _split_kvs(0, 0, 0)
    parts: list[list[_Tensor]] = [[]]
    for tensor in source.tensors:
        current = parts[-1]
        kvs = (source.kvs if len(parts) == 1 else source.alignment_kv) + split_kvs
        if current and _part_bytes(kvs, [*current, tensor], source.alignment) > max_bytes:
            parts.append([tensor])
        else:
            current.append(tensor)
    return parts


def split_gguf(source_path: Path, out_dir: Path, max_bytes: int, stem: str = "model") -> list[Part]:
    """Write the parts of `source_path` into `out_dir` (which the caller stages and renames); in load order.

    A file that fits in `max_bytes` still becomes one part (`<stem>-00001-of-00001.gguf`), split keys
    included; callers that want the whole file in that case check its size first.
    """
    if max_bytes < 1:
        raise BuildError(f"invalid GGUF part size limit {max_bytes}", "use a positive number of bytes")
    source = _Source(Path(source_path))
    runs = plan(source, max_bytes)
    count = len(runs)
    if count > 0xFFFF:
        raise BuildError(f"{source_path} would need {count} parts", "raise the part size limit")
    total = len(source.tensors)
    names = part_names(stem, count)
    parts = []
    with open(source_path, "rb") as src:
        for index, (run, name) in enumerate(zip(runs, names, strict=True)):
            kvs = (source.kvs if index == 0 else source.alignment_kv) + _split_kvs(index, count, total)
            path = Path(out_dir) / name
            parts.append(_write_part(src, path, kvs, run, source.alignment))
    return parts


def _write_part(src, path: Path, kvs: list[bytes], tensors: list[_Tensor], alignment: int) -> Part:
    digest = hashlib.sha256()
    written = 0
    with open(path, "wb") as out:

        def put(chunk: bytes | memoryview) -> None:
            nonlocal written
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)

        put(struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(tensors), len(kvs)))
        for kv in kvs:
            put(kv)
        offset = 0
        for t in tensors:
            put(t.info_head + struct.pack("<Q", offset))
            offset += t.nbytes + _pad(t.nbytes, alignment)
        put(bytes(_pad(written, alignment)))
        buffer = bytearray(min(COPY_CHUNK, max((t.nbytes for t in tensors), default=1)))
        view = memoryview(buffer)
        for t in tensors:
            src.seek(t.offset)
            left = t.nbytes
            while left:
                n = src.readinto(view[: min(left, len(buffer))])
                if not n:
                    raise BuildError(f"{src.name} ends inside tensor data", "rebuild the model's GGUF")
                put(view[:n])
                left -= n
            put(bytes(_pad(t.nbytes, alignment)))
    expected = _part_bytes(kvs, tensors, alignment)
    assert written == expected, (written, expected)  # the plan's arithmetic is the file's
    return Part(path, written, digest.hexdigest(), len(tensors))
