"""Float weights -> asymmetric grouped integers (q4g32_min, q8g32_min) with a searched scale and minimum.

MLC's q4fXX_1 uses 15 levels around zero with `scale = max|w| / 7`: one level is wasted and a group
whose weights are not centred on zero wastes more. Here each group of 32 gets all 16 levels between a
minimum and a maximum, and the scale/minimum pair is chosen by a small search (as llama.cpp's K-quant
makers do): for a range of candidate inverse scales, round, then refit scale and minimum by least
squares for those integers, and keep the pair with the lowest squared error. The final integers are
rounded against the scale and minimum *as stored* (f16 or f32), so dequantization reproduces them.
"""

from __future__ import annotations

import numpy as np

from build_pipeline.weight_formats import WeightFormat, pack

CHUNK_ELEMENTS = 1 << 20  # rows are quantized in blocks of ~1M weights to bound temporaries
# Candidate inverse scales: (levels - 1 + step) / (max - min) for these steps.
SEARCH_STEPS = np.arange(-1.0, 1.01, 0.1)


def quantize(weight: np.ndarray, fmt: WeightFormat, scale_dtype: str) -> list[np.ndarray]:
    """[out, in] float -> [q_weight uint32, q_scale, q_min] for a format with a minimum."""
    assert fmt.has_min and fmt.quantized
    out_dim, in_dim = weight.shape
    fmt.check_input(in_dim)
    words = np.empty((out_dim, in_dim // fmt.per_word), dtype=np.uint32)
    scale = np.empty((out_dim, in_dim // fmt.group), dtype=scale_dtype)
    minimum = np.empty_like(scale)
    rows = max(1, CHUNK_ELEMENTS // in_dim)
    for start in range(0, out_dim, rows):
        block = slice(start, min(start + rows, out_dim))
        q, scale[block], minimum[block] = _quantize_rows(weight[block], fmt, scale_dtype)
        words[block] = pack(q, fmt)
    return [words, scale, minimum]


def _quantize_rows(weight: np.ndarray, fmt: WeightFormat, scale_dtype: str):
    out_dim, in_dim = weight.shape
    x = weight.astype(np.float32, copy=False).reshape(-1, fmt.group)
    top = float(fmt.levels - 1)
    lo, hi = x.min(axis=1), x.max(axis=1)
    span = hi - lo
    flat = span == 0
    span = np.where(flat, 1, span)
    # Start: the plain min/max grid.
    best_s, best_m = span / top, lo.copy()
    best_err = _error(x, best_s, best_m, top)
    n = np.float32(fmt.group)
    sum_x = x.sum(axis=1)
    for step in SEARCH_STEPS:
        inv = (top + step) / span
        q = np.clip(np.rint((x - lo[:, None]) * inv[:, None]), 0, top)
        # Least-squares scale and minimum for these integers.
        sum_q, sum_qq, sum_qx = q.sum(axis=1), (q * q).sum(axis=1), (q * x).sum(axis=1)
        det = n * sum_qq - sum_q * sum_q
        ok = det > 0
        det = np.where(ok, det, 1)
        s = np.where(ok, (n * sum_qx - sum_q * sum_x) / det, best_s)
        m = np.where(ok, (sum_x - s * sum_q) / n, best_m)
        s = np.maximum(s, 1e-30)
        err = _error(x, s, m, top)
        better = err < best_err
        best_s, best_m, best_err = (
            np.where(better, s, best_s),
            np.where(better, m, best_m),
            np.where(better, err, best_err),
        )
    best_s = np.where(flat, 0, best_s)
    best_m = np.where(flat, lo, best_m)
    stored_s = best_s.astype(scale_dtype)
    stored_m = best_m.astype(scale_dtype)
    s32, m32 = stored_s.astype(np.float32), stored_m.astype(np.float32)
    safe = np.where(s32 == 0, 1, s32)
    q = np.clip(np.rint((x - m32[:, None]) / safe[:, None]), 0, top).astype(np.uint32)
    groups = in_dim // fmt.group
    return (q.reshape(out_dim, in_dim), stored_s.reshape(out_dim, groups), stored_m.reshape(out_dim, groups))


def _error(x: np.ndarray, s: np.ndarray, m: np.ndarray, top: float) -> np.ndarray:
    """Squared error per group when rounding x to the grid (s, m)."""
    q = np.clip(np.rint((x - m[:, None]) / s[:, None]), 0, top)
    d = q * s[:, None] + m[:, None] - x
    return (d * d).sum(axis=1)
