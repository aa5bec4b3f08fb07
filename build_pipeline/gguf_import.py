"""Lossless import of quantized GGUF tensors into Lantern's weight formats (weight_formats.py).

Re-quantizing an already 4-bit GGUF tensor rounds every weight a second time (Q4_1 -> MLC q4f32_1
costs SmolLM2-135M 1.5x perplexity). Instead each GGUF block is re-expressed in a GGUF-native format
with the block type's own bits per weight (issue 19): a 4-bit (Q8_0: 8-bit) plane plus a 1-bit (Q5_*) or
2-bit (Q6_K) high plane, q = lo | hi << 4, and the block's scales as its own f16 bits (K types: the
unsigned 6-bit / signed 8-bit sub-scales as bytes and the f16 d, dmin per super-block of 256). The
kernels decode them to float32 and evaluate

    Q4_0  (q - 8) * d        Q5_0  (q - 16) * d       Q8_0  (q - 128) * d     Q6_K  (q - 32) * (d*sc)
    Q4_1  q * d + m          Q5_1  q * d + m          Q4_K / Q5_K  q * (d*sc) + -(dmin*mn)

which is exact in float32 up to the one rounding at the add: the same values `gguf.quants.dequantize`
yields. The stored tensors do not depend on the variant's dtype (f16 and f32 variants are identical).

Only the block *scales* are decoded here (their byte layout); the integers are recovered from gguf's
own dequantized values and the stored tensors are then checked bit for bit against them (numpy's
`dequantize`, what the kernels compute), so a layout mistake can never slip through silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from build_pipeline.errors import BuildError
from build_pipeline.weight_formats import (
    G_Q4_0,
    G_Q4_1,
    G_Q4_K,
    G_Q5_0,
    G_Q5_1,
    G_Q5_K,
    G_Q6_K,
    G_Q8_0,
    SegmentedFormat,
    WeightFormat,
    dequantize,
    join_scales,
    split_planes,
)

# GGUF type name -> (block elements, block bytes, format)
LAYOUTS = {
    "Q4_0": (32, 18, G_Q4_0),
    "Q4_1": (32, 20, G_Q4_1),
    "Q5_0": (32, 22, G_Q5_0),
    "Q5_1": (32, 24, G_Q5_1),
    "Q8_0": (32, 34, G_Q8_0),
    "Q4_K": (256, 144, G_Q4_K),
    "Q5_K": (256, 176, G_Q5_K),
    "Q6_K": (256, 210, G_Q6_K),
}


def supported(type_name: str) -> bool:
    return type_name in LAYOUTS


@dataclass
class Imported:
    """One weight in a GGUF-native format: integers [out, in] (both planes), the float32 scale (and minimum)
    per group they evaluate with, and the raw scale parts as stored (`native`: f16 bits "d"/"m" per group, or
    K-quant bytes "sc"/"mn" per group and f16 bits "d"/"dmin" per super-block). A segmented weight (mixed
    fused types) has `parts` instead."""

    fmt: Any  # WeightFormat, or SegmentedFormat with `parts`
    q: Any  # np.ndarray (None for a segmented weight)
    scale: np.ndarray | None
    minimum: np.ndarray | None
    source_type: str
    native: dict = field(default_factory=dict)
    parts: list = field(default_factory=list)

    def stored(self, scale_dtype: str = "float32") -> list[np.ndarray]:
        """The tensors as written to the shards, in fmt.tensor_suffixes() order (independent of dtype)."""
        if self.parts:
            return [t for p in self.parts for t in p.stored(scale_dtype)]
        return _pack_rows(self.q, self.fmt) + join_scales(self.fmt, self.native)


def _pack_rows(q: np.ndarray, fmt: WeightFormat, rows: int = 4096) -> list[np.ndarray]:
    """`split_planes` a block of rows at a time: its uint32 temporaries for a whole 151,936-row embedding are
    over 1 GB, the build's peak (issue 12's memory bound); packed, the same rows are ~70 MB."""
    out: list[np.ndarray] = []
    for start in range(0, q.shape[0], rows):
        planes = split_planes(q[start : start + rows], fmt)
        if not out:
            out = [np.empty((q.shape[0], p.shape[1]), dtype=np.uint32) for p in planes]
        for o, p in zip(out, planes, strict=True):
            o[start : start + rows] = p
    return out


def _bits16(blocks: np.ndarray, offset: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[:, offset : offset + 2]).view(np.uint16)[:, 0]


def _f16(blocks: np.ndarray, offset: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[:, offset : offset + 2]).view(np.float16)[:, 0].astype(np.float32)


def _k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit scales and 8 six-bit minimums of a Q4_K/Q5_K super-block (12 bytes)."""
    s = packed.astype(np.uint8)
    sc = np.empty((len(s), 8), dtype=np.uint8)
    mn = np.empty((len(s), 8), dtype=np.uint8)
    sc[:, :4] = s[:, 0:4] & 63
    mn[:, :4] = s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc.astype(np.float32), mn.astype(np.float32)


def _group_scales(type_name: str, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Per-group (scale, minimum) in float32 for [n_blocks, block_bytes] (minimum None if symmetric), and
    the raw parts the format stores, per block: {name: [n_blocks, k]}."""
    if type_name in ("Q4_0", "Q5_0", "Q8_0"):
        d = _bits16(blocks, 0)
        return _f16(blocks, 0)[:, None], None, {"d": d[:, None]}
    if type_name in ("Q4_1", "Q5_1"):
        native = {"d": _bits16(blocks, 0)[:, None], "m": _bits16(blocks, 2)[:, None]}
        return _f16(blocks, 0)[:, None], _f16(blocks, 2)[:, None], native
    if type_name in ("Q4_K", "Q5_K"):
        d, dmin = _f16(blocks, 0), _f16(blocks, 2)
        sc, mn = _k_scales(blocks[:, 4:16])
        native = {
            "sc": sc.astype(np.uint8),
            "mn": mn.astype(np.uint8),
            "d": _bits16(blocks, 0)[:, None],
            "dmin": _bits16(blocks, 2)[:, None],
        }
        return d[:, None] * sc, -(dmin[:, None] * mn), native
    if type_name == "Q6_K":
        sc8 = np.ascontiguousarray(blocks[:, 192:208])
        sc = sc8.view(np.int8).astype(np.float32)
        return _f16(blocks, 208)[:, None] * sc, None, {"sc": sc8.view(np.uint8), "d": _bits16(blocks, 208)[:, None]}
    raise AssertionError(type_name)


# Rows re-expressed at a time: the float temporaries of one step stay ~50 MB even for a 151,936-row
# embedding (whole-tensor temporaries were ~5x its float32 size: the build's peak memory).
IMPORT_ROWS = 16384


def import_tensor(type_name: str, raw: np.ndarray, values: np.ndarray) -> Imported:
    """Re-express one GGUF tensor. `raw` is its block bytes [rows, row_bytes], `values` what
    gguf.quants.dequantize returns for it ([rows, cols] float32); BuildError if not exact."""
    if values.shape[0] <= IMPORT_ROWS:
        return _import_rows(type_name, raw, values)
    parts = [
        _import_rows(type_name, raw[i : i + IMPORT_ROWS], values[i : i + IMPORT_ROWS])
        for i in range(0, values.shape[0], IMPORT_ROWS)
    ]
    return join_rows(parts, values)


def _import_rows(type_name: str, raw: np.ndarray, values: np.ndarray) -> Imported:
    block_elems, block_bytes, fmt = LAYOUTS[type_name]
    rows, cols = values.shape
    blocks = np.ascontiguousarray(raw).reshape(-1, block_bytes)
    if blocks.shape[0] * block_elems != rows * cols:
        raise BuildError(
            f"GGUF {type_name} tensor of {rows}x{cols} has {blocks.shape[0]} blocks",
            "the GGUF file is corrupt; download it again",
        )
    scale, minimum, native = _group_scales(type_name, blocks)
    native = {k: v.reshape(rows, -1) for k, v in native.items()}
    groups = cols // fmt.group
    scale = scale.reshape(rows, groups)
    minimum = None if minimum is None else minimum.reshape(rows, groups)
    w = values.astype(np.float32, copy=False).reshape(rows, groups, fmt.group)
    safe = np.where(scale == 0, 1, scale)[..., None]
    if minimum is None:
        q = np.rint(w / safe) + fmt.zero  # symmetric: the signed GGUF integer, stored offset by `zero`
    else:
        q = np.rint((w - minimum[..., None]) / safe)
    top = (1 << (fmt.bits + fmt.hi_bits)) - 1
    q = np.clip(q, 0, top).astype(np.uint8).reshape(rows, cols)
    out = Imported(fmt, q, scale.astype(np.float32), minimum, type_name, native)
    check_exact(out, values)
    return out


def check_exact(item: Imported, values: np.ndarray) -> None:
    """The kernel's float32 evaluation of the stored tensors must reproduce gguf's values (zeros compared
    as values)."""
    got = dequantize(item.fmt, item.stored())
    want = values.astype(np.float32, copy=False)
    # `+ 0` turns -0.0 into +0.0: (q - 8) * d and q * d - 8 * d differ only in the sign of a zero.
    if not np.array_equal((got + np.float32(0)).view(np.uint32), (want + np.float32(0)).view(np.uint32)):
        bad = int(np.count_nonzero(got != want))
        raise BuildError(
            f"importing a GGUF {item.source_type} tensor as {item.fmt.name} is not exact "
            f"({bad} of {want.size} values differ)",
            "this is a bug in build_pipeline/gguf_import.py; build a q4f32_1 variant meanwhile",
        )


def _concat(parts: list[Imported]) -> Imported:
    """Row-concatenation of imports of one format."""
    fmt = parts[0].fmt
    native = {k: np.concatenate([p.native[k] for p in parts]) for k in parts[0].native}
    minimum = np.concatenate([p.minimum for p in parts]) if parts[0].minimum is not None else None
    source = "+".join(dict.fromkeys(p.source_type for p in parts))
    return Imported(
        fmt,
        np.concatenate([p.q for p in parts]),
        np.concatenate([p.scale for p in parts]),
        minimum,
        source,
        native,
    )


def join_rows(parts: list[Imported], values: np.ndarray) -> Imported:
    """Concatenate imported tensors along the output axis (fused q/k/v, gate/up).

    Equal formats concatenate as they are; mixed ones (e.g. Q4_K q/k with a Q6_K v) become a segmented
    weight: each run of rows keeps its own format, so nothing is widened."""
    flat = [q for p in parts for q in (p.parts or [p])]
    if len(flat) == 1:
        return flat[0]
    runs: list[list[Imported]] = []
    for p in flat:
        if runs and runs[-1][0].fmt == p.fmt:
            runs[-1].append(p)
        else:
            runs.append([p])
    segs = [_concat(r) if len(r) > 1 else r[0] for r in runs]
    if len(segs) == 1:
        return segs[0]
    fmt = SegmentedFormat(tuple((s.fmt, s.q.shape[0]) for s in segs))
    source = "+".join(dict.fromkeys(t for s in segs for t in s.source_type.split("+")))
    out = Imported(fmt, None, None, None, source, parts=segs)
    check_exact(out, values)
    return out
