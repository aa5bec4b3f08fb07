"""Quantization schemes (one per built variant) and MLC's symmetric 4-bit quantizer.

q4fXX_1 (MLC's): symmetric 4-bit groups of 32 along the input axis, 8 nibbles per uint32 (element r
of a word at bits 4r), `scale = max|w| / 7`, `q = clip(round(w / scale) + 7, 0, 14)`, dequantized as
`(q - 7) * scale`. q0fXX: plain float weights. The second half of the name is the dtype of
activations, norms, biases and scales.

q4fXX_asym (Lantern's): per-tensor formats (weight_formats.py). Quantized GGUF tensors are imported
losslessly in GGUF-native formats with the block type's own bits per weight and its f16 scales as stored
bits (gguf_import.py; fused tensors of mixed types as row segments, one format each), identical for the
f16 and f32 variants; float weights get asymmetric 4-bit groups of 32 with a searched scale and minimum
in the variant's dtype (float_quantizer.py). The per-weight formats a variant ended up with are recorded in its tensor cache
and travel with the scheme into the compiler (`Scheme.with_formats`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

import numpy as np

from build_pipeline.errors import BuildError
from build_pipeline.weight_formats import FLOAT, MLC_Q4, Q4_MIN, WeightFormat, get_format

GROUP_SIZE = 32
NIBBLES_PER_WORD = 8
MAX_INT = 7


@dataclass(frozen=True)
class Scheme:
    name: str
    bits: int  # 4 for grouped int4, 0 for unquantized
    dtype: str  # "float16" or "float32"
    kind: str = "mlc"  # "mlc" (symmetric q4, MLC-compatible), "asym" (per-tensor formats) or "float"
    # (weight base name, format name) of every linear/embedding whose format is not the default;
    # filled in from the converted weights (see with_formats).
    formats: tuple[tuple[str, str], ...] = ()

    @property
    def quantized(self) -> bool:
        return self.bits == 4

    @property
    def needs_shader_f16(self) -> bool:
        return self.dtype == "float16"

    @property
    def default_format(self) -> WeightFormat:
        return {"mlc": MLC_Q4, "asym": Q4_MIN, "float": FLOAT}[self.kind]

    def format_of(self, base: str) -> WeightFormat:
        """Storage format of the linear/embedding weight `base` (e.g. "model.layers.0.mlp.down_proj")."""
        return get_format(dict(self.formats).get(base, self.default_format.name))

    def with_formats(self, formats: dict[str, str]) -> Scheme:
        """This scheme with the per-weight formats the converter chose (defaults left implicit)."""
        extra = tuple(sorted((b, f) for b, f in formats.items() if f != self.default_format.name))
        return replace(self, formats=extra)

    def cache_name(self) -> str:
        """Name + formats: what a compiled library depends on."""
        if not self.formats:
            return self.name
        return f"{self.name}+{hashlib.sha256(json.dumps(self.formats).encode()).hexdigest()[:12]}"


SCHEMES = {
    s.name: s
    for s in (
        Scheme("q4f16_asym", 4, "float16", "asym"),
        Scheme("q4f32_asym", 4, "float32", "asym"),
        Scheme("q4f16_1", 4, "float16"),
        Scheme("q4f32_1", 4, "float32"),
        Scheme("q0f16", 0, "float16", "float"),
        Scheme("q0f32", 0, "float32", "float"),
    )
}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise BuildError(
            f"unsupported quantization {name!r}",
            f"use one of: {', '.join(SCHEMES)}",
        ) from None


CHUNK_ELEMENTS = 1 << 20  # rows are quantized in blocks of ~1M weights to bound temporaries


def quantize_q4(weight: np.ndarray, scale_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """[out, in] float -> (q_weight [out, in/8] uint32, q_scale [out, in/32] scale_dtype)."""
    out_dim, in_dim = weight.shape
    if in_dim % GROUP_SIZE:
        raise BuildError(
            f"cannot 4-bit quantize a tensor with input size {in_dim}: not a multiple of {GROUP_SIZE}",
            "use a q0 quantization (q0f16 / q0f32) for this model",
        )
    q_weight = np.empty((out_dim, in_dim // NIBBLES_PER_WORD), dtype=np.uint32)
    q_scale = np.empty((out_dim, in_dim // GROUP_SIZE), dtype=scale_dtype)
    rows = max(1, CHUNK_ELEMENTS // in_dim)
    for start in range(0, out_dim, rows):
        block = slice(start, min(start + rows, out_dim))
        q_weight[block], q_scale[block] = _quantize_rows(weight[block], scale_dtype)
    return q_weight, q_scale


def _quantize_rows(weight: np.ndarray, scale_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    out_dim, in_dim = weight.shape
    groups = weight.astype(np.float32, copy=False).reshape(out_dim, in_dim // GROUP_SIZE, GROUP_SIZE)
    scale = (np.abs(groups).max(axis=2) / MAX_INT).astype(scale_dtype)
    # Quantize against the scale as stored, so dequantization reproduces exactly what we rounded.
    stored = scale.astype(np.float32)[..., None]
    safe = np.where(stored == 0, 1, stored)
    q = np.clip(np.rint(groups / safe) + MAX_INT, 0, 2 * MAX_INT).astype(np.uint32)
    q = q.reshape(out_dim, in_dim // NIBBLES_PER_WORD, NIBBLES_PER_WORD)
    shifts = np.arange(NIBBLES_PER_WORD, dtype=np.uint32) * 4
    packed = np.bitwise_or.reduce(q << shifts, axis=2).astype(np.uint32)
    return packed, scale


def dequantize_q4(q_weight: np.ndarray, q_scale: np.ndarray) -> np.ndarray:
    """Inverse of `quantize_q4`, in float32: what the GPU kernels compute with."""
    out_dim, words = q_weight.shape
    shifts = np.arange(NIBBLES_PER_WORD, dtype=np.uint32) * 4
    q = ((q_weight[..., None] >> shifts) & 0xF).reshape(out_dim, words * NIBBLES_PER_WORD)
    scale = np.repeat(q_scale.astype(np.float32), GROUP_SIZE, axis=1)
    return (q.astype(np.float32) - MAX_INT) * scale
