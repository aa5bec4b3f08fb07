"""Per-tensor storage formats of quantized weights, and their numpy pack/unpack.

Every quantized format is integers packed little-endian into uint32 words (element r of a word at
bits `bits * r`, 32 / bits elements per word) plus, per group of `group` consecutive input elements,
a scale and optionally a minimum:

    w = (q - zero) * scale            (symmetric formats, no minimum stored)
    w = q * scale + min               (formats with a minimum; zero = 0)

The compiled kernels (compiler/layers.py) evaluate exactly this expression in float32, so
`dequantize` here is bit-for-bit what the GPU/CPU computes with. With small integers and scales
that are products of an f16 and a small integer (all GGUF block types), `q * scale` is exact in
float32 and the one rounding happens at the add, which is why GGUF blocks import losslessly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from build_pipeline.errors import BuildError

WORD_BITS = 32


@dataclass(frozen=True)
class WeightFormat:
    name: str
    bits: int  # 0 = plain float weights
    group: int = 32
    zero: int = 0  # subtracted from the stored integer (symmetric formats)
    has_min: bool = False

    @property
    def quantized(self) -> bool:
        return self.bits > 0

    @property
    def per_word(self) -> int:
        return WORD_BITS // self.bits

    @property
    def levels(self) -> int:
        return 1 << self.bits

    def tensor_suffixes(self) -> tuple[str, ...]:
        """Names of the stored tensors of one weight, in tensor-cache order."""
        if not self.quantized:
            return ("weight",)
        return ("q_weight", "q_scale", "q_min") if self.has_min else ("q_weight", "q_scale")

    def shapes(self, out_dim: int, in_dim: int, scale_dtype: str) -> list[tuple[tuple[int, int], str]]:
        """(shape, dtype) of each stored tensor for an [out, in] weight."""
        if not self.quantized:
            return [((out_dim, in_dim), scale_dtype)]
        self.check_input(in_dim)
        packed = ((out_dim, in_dim // self.per_word), "uint32")
        groups = ((out_dim, in_dim // self.group), scale_dtype)
        return [packed, groups, groups] if self.has_min else [packed, groups]

    def check_input(self, in_dim: int) -> None:
        if in_dim % self.group or in_dim % self.per_word:
            raise BuildError(
                f"cannot store a weight with input size {in_dim} as {self.name}: not a multiple of {self.group}",
                "use a q0 quantization (q0f16 / q0f32) for this model",
            )


FLOAT = WeightFormat("float", 0, 0)
# MLC's q4fXX_1: 15 levels around 7, scale = max|w| / 7 (kept for compatibility with MLC builds).
MLC_Q4 = WeightFormat("q4g32_mlc", 4, 32, zero=7)
# Asymmetric 4-bit with a minimum: GGUF Q4_1 / Q4_K exactly, and the float quantizer's target.
Q4_MIN = WeightFormat("q4g32_min", 4, 32, has_min=True)
# Symmetric 4-bit around 8: GGUF Q4_0 exactly ((q - 8) * d).
Q4_SYM = WeightFormat("q4g32_sym", 4, 32, zero=8)
# 8-bit containers for the wider GGUF blocks (signed values are stored offset by 128).
Q8_SYM = WeightFormat("q8g32_sym", 8, 32, zero=128)  # Q8_0, Q5_0
Q8_MIN = WeightFormat("q8g32_min", 8, 32, has_min=True)  # Q5_1, Q5_K, other blocks of 32
Q8_SYM16 = WeightFormat("q8g16_sym", 8, 16, zero=128)  # Q6_K (sub-blocks of 16)
Q8_MIN16 = WeightFormat("q8g16_min", 8, 16, has_min=True)  # mixed groups of 16 (e.g. Q6_K fused with Q4_K)

FORMATS = {f.name: f for f in (FLOAT, MLC_Q4, Q4_MIN, Q4_SYM, Q8_SYM, Q8_MIN, Q8_SYM16, Q8_MIN16)}


def get_format(name: str) -> WeightFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise BuildError(
            f"unknown weight format {name!r} in the tensor cache",
            f"rebuild the variant; known formats: {', '.join(FORMATS)}",
        ) from None


def pack(q: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """[out, in] integers in 0..2^bits-1 -> [out, in / per_word] uint32 words."""
    out_dim, in_dim = q.shape
    q = q.astype(np.uint32).reshape(out_dim, in_dim // fmt.per_word, fmt.per_word)
    shifts = np.arange(fmt.per_word, dtype=np.uint32) * fmt.bits
    return np.bitwise_or.reduce(q << shifts, axis=2).astype(np.uint32)


def unpack(words: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """Inverse of `pack`: [out, words] uint32 -> [out, in] uint32 integers."""
    out_dim, n = words.shape
    shifts = np.arange(fmt.per_word, dtype=np.uint32) * fmt.bits
    mask = np.uint32(fmt.levels - 1)
    return ((words[..., None] >> shifts) & mask).reshape(out_dim, n * fmt.per_word)


def dequantize(fmt: WeightFormat, tensors: list[np.ndarray]) -> np.ndarray:
    """Stored tensors -> float32 [out, in], evaluated exactly like the compiled kernels do."""
    if not fmt.quantized:
        return np.asarray(tensors[0], dtype=np.float32)
    q = unpack(tensors[0], fmt).astype(np.float32)
    if fmt.zero:
        q = q - np.float32(fmt.zero)
    scale = np.repeat(np.asarray(tensors[1], dtype=np.float32), fmt.group, axis=1)
    w = q * scale
    if fmt.has_min:
        w = w + np.repeat(np.asarray(tensors[2], dtype=np.float32), fmt.group, axis=1)
    return w
