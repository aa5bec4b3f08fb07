"""Lossless import of quantized GGUF tensors into Lantern's weight formats (weight_formats.py).

Re-quantizing an already 4-bit GGUF tensor rounds every weight a second time (Q4_1 -> MLC q4f32_1
costs SmolLM2-135M 1.5x perplexity). Instead each GGUF block is re-expressed as integers plus a
per-group scale (and minimum) that the compiled kernels evaluate to *the same float32 values*
`gguf.quants.dequantize` yields:

    Q4_0  (q - 8) * d                -> q4g32_sym          Q5_0  (q - 16) * d       -> q8g32_sym
    Q4_1  q * d + m                  -> q4g32_min          Q5_1  q * d + m          -> q8g32_min
    Q4_K  q * (d*sc) - dmin*m        -> q4g32_min          Q5_K  q * (d*sc) - dmin*m -> q8g32_min
    Q8_0  q * d                      -> q8g32_sym          Q6_K  (q - 32) * (d*sc)  -> q8g16_sym (groups of 16)

Only the block *scales* are decoded here (their byte layout); the integers are recovered from gguf's
own dequantized values and the whole tensor is then checked bit for bit (f32 scales) against them,
so a layout mistake can never slip through silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from build_pipeline.errors import BuildError
from build_pipeline.weight_formats import (
    Q4_MIN,
    Q4_SYM,
    Q8_MIN,
    Q8_MIN16,
    Q8_SYM,
    Q8_SYM16,
    WeightFormat,
    dequantize,
    pack,
)

# GGUF type name -> (block elements, block bytes, format)
LAYOUTS = {
    "Q4_0": (32, 18, Q4_SYM),
    "Q4_1": (32, 20, Q4_MIN),
    "Q5_0": (32, 22, Q8_SYM),
    "Q5_1": (32, 24, Q8_MIN),
    "Q8_0": (32, 34, Q8_SYM),
    "Q4_K": (256, 144, Q4_MIN),
    "Q5_K": (256, 176, Q8_MIN),
    "Q6_K": (256, 210, Q8_SYM16),
}


def supported(type_name: str) -> bool:
    return type_name in LAYOUTS


@dataclass
class Imported:
    """One weight in a Lantern format: integers [out, in], float32 scale (and minimum) per group."""

    fmt: WeightFormat
    q: np.ndarray
    scale: np.ndarray
    minimum: np.ndarray | None
    source_type: str

    def stored(self, scale_dtype: str) -> list[np.ndarray]:
        """The tensors as written to the shards (q_weight, q_scale[, q_min])."""
        out = [_pack_rows(self.q, self.fmt), self.scale.astype(scale_dtype)]
        if self.minimum is not None:  # formats with a minimum (fmt.has_min)
            out.append(self.minimum.astype(scale_dtype))
        return out


def _pack_rows(q: np.ndarray, fmt: WeightFormat, rows: int = 4096) -> np.ndarray:
    """`pack` a block of rows at a time: its uint32 temporaries for a whole 151,936-row embedding are over
    1 GB, the build's peak (issue 12's memory bound); packed, the same rows are 136 MB."""
    out = np.empty((q.shape[0], q.shape[1] // fmt.per_word), dtype=np.uint32)
    for start in range(0, q.shape[0], rows):
        out[start : start + rows] = pack(q[start : start + rows], fmt)
    return out


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


def _group_scales(type_name: str, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-group (scale, minimum) in float32 for [n_blocks, block_bytes]; minimum None if symmetric."""
    if type_name in ("Q4_0", "Q5_0", "Q8_0"):
        return _f16(blocks, 0)[:, None], None
    if type_name in ("Q4_1", "Q5_1"):
        return _f16(blocks, 0)[:, None], _f16(blocks, 2)[:, None]
    if type_name in ("Q4_K", "Q5_K"):
        d, dmin = _f16(blocks, 0), _f16(blocks, 2)
        sc, mn = _k_scales(blocks[:, 4:16])
        return d[:, None] * sc, -(dmin[:, None] * mn)
    if type_name == "Q6_K":
        sc = blocks[:, 192:208].view(np.int8).astype(np.float32)
        return _f16(blocks, 208)[:, None] * sc, None
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
    scale, minimum = _group_scales(type_name, blocks)
    groups = cols // fmt.group
    scale = scale.reshape(rows, groups)
    minimum = None if minimum is None else minimum.reshape(rows, groups)
    w = values.astype(np.float32, copy=False).reshape(rows, groups, fmt.group)
    safe = np.where(scale == 0, 1, scale)[..., None]
    if minimum is None:
        q = np.rint(w / safe) + fmt.zero  # symmetric: the signed GGUF integer, stored offset by `zero`
    else:
        q = np.rint((w - minimum[..., None]) / safe)
    q = np.clip(q, 0, fmt.levels - 1).astype(np.uint16 if fmt.bits > 8 else np.uint8).reshape(rows, cols)
    out = Imported(fmt, q, scale.astype(np.float32), minimum, type_name)
    check_exact(out, values)
    return out


def check_exact(item: Imported, values: np.ndarray) -> None:
    """The kernel's float32 evaluation must reproduce gguf's values (zeros compared as values)."""
    got = dequantize(
        item.fmt, [pack(item.q, item.fmt), item.scale] + ([item.minimum] if item.minimum is not None else [])
    )
    want = values.astype(np.float32, copy=False)
    # `+ 0` turns -0.0 into +0.0: (q - 8) * d and q * d - 8 * d differ only in the sign of a zero.
    if not np.array_equal((got + np.float32(0)).view(np.uint32), (want + np.float32(0)).view(np.uint32)):
        bad = int(np.count_nonzero(got != want))
        raise BuildError(
            f"importing a GGUF {item.source_type} tensor as {item.fmt.name} is not exact "
            f"({bad} of {want.size} values differ)",
            "this is a bug in build_pipeline/gguf_import.py; build a q4f32_1 variant meanwhile",
        )


# The zero point of each symmetric GGUF type's own unsigned integers (all powers of two).
_NATURAL_ZERO = {"Q4_0": 8, "Q5_0": 16, "Q6_K": 32, "Q8_0": 128}


def _as_general(item: Imported, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, minimum) with w = q * scale + minimum, groups split down to `group`.

    Symmetric types go back to their own unsigned integers (Q6_K: 0..63, not 96..159): then q * scale
    stays exact in float32 (Q6_K's scale d*sc already has 18 significant bits) and minimum =
    -zero * scale is exact too, so the one rounding at the add reproduces gguf's value."""
    rep = item.fmt.group // group
    scale = np.repeat(item.scale, rep, axis=1)
    if item.minimum is not None:  # fmt.has_min
        return item.q, scale, np.repeat(item.minimum, rep, axis=1)
    natural = _NATURAL_ZERO[item.source_type]
    q = item.q.astype(np.int16) - (item.fmt.zero - natural)
    return q.astype(np.uint8), scale, -np.float32(natural) * scale


def join_rows(parts: list[Imported], values: np.ndarray) -> Imported:
    """Concatenate imported tensors along the output axis (fused q/k/v, gate/up).

    Equal formats concatenate as they are; mixed ones (e.g. Q4_K q/k with a Q6_K v) go to the 8-bit
    format with a minimum and the smallest group, which holds each of them exactly."""
    if len(parts) == 1:
        return parts[0]
    fmts = {p.fmt for p in parts}
    source = "+".join(dict.fromkeys(p.source_type for p in parts))
    if len(fmts) == 1:
        fmt = parts[0].fmt
        minimum = np.concatenate([p.minimum for p in parts]) if fmt.has_min else None
        return Imported(
            fmt, np.concatenate([p.q for p in parts]), np.concatenate([p.scale for p in parts]), minimum, source
        )
    group = min(p.fmt.group for p in parts)
    fmt = Q8_MIN16 if group == 16 else Q8_MIN
    general = [_as_general(p, group) for p in parts]
    out = Imported(
        fmt,
        np.concatenate([g[0] for g in general]).astype(np.uint8),
        np.concatenate([g[1] for g in general]),
        np.concatenate([g[2] for g in general]),
        source,
    )
    check_exact(out, values)
    return out
