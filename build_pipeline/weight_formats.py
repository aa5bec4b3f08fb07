"""Per-tensor storage formats of quantized weights, and their numpy pack/unpack.

Every quantized format is integers packed little-endian into uint32 words (element r of a word at
bits `bits * r`, 32 / bits elements per word) plus, per group of `group` consecutive input elements,
a scale and optionally a minimum:

    w = (q - zero) * scale            (symmetric formats, no minimum stored)
    w = q * scale + min               (formats with a minimum; zero = 0)

The compiled kernels (nn/layers.py) evaluate exactly this expression in float32, so
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
    bits: int  # 0 = plain float weights; else the bits of the low plane (q_weight)
    group: int = 32
    zero: int = 0  # subtracted from the stored integer (symmetric formats)
    has_min: bool = False
    # GGUF-native layouts (issue 19). Stored tensors, all uint32, each read with ONE load per weight element
    # (dlight's GEMV analysis asserts on a buffer read at two indices, e.g. two sections of one tensor):
    #   q_weight: the low plane, `bits` per element; q_high: the high plane, `hi_bits` per element (if any),
    #             q = lo | (hi << bits);
    #   q_scale, by `scale_kind`:
    #     "f16": the GGUF's own f16 bits per group (decoded to f32 with integer ops in the kernel, so no
    #            shader-f16 is needed): d | m << 16 per word with a minimum, else two d per word;
    #     "k":   K-quant sub-scales per group: sc | mn << 8 (unsigned 6-bit scale and minimum) two per word
    #            with a minimum, else the int8 sc four per word (Q6_K);
    #   q_super ("k" only): the f16 d | dmin << 16 per super-block of `super_group` (without a minimum, two
    #            d per word). scale = d * sc, min = -(dmin * mn): both products exact in float32.
    # "float" formats store q_scale (and q_min) in the variant's dtype instead.
    hi_bits: int = 0
    scale_kind: str = "float"
    sub_signed: bool = False  # "k" sub-scales are int8 (Q6_K)
    super_group: int = 256

    @property
    def native(self) -> bool:
        return self.scale_kind != "float"

    @property
    def scale_bits(self) -> int:
        """Bits per group in q_scale of a native format."""
        if self.scale_kind == "f16":
            return 32 if self.has_min else 16
        return 16 if self.has_min else 8

    @property
    def quantized(self) -> bool:
        return self.bits > 0

    @property
    def per_word(self) -> int:
        return WORD_BITS // self.bits

    @property
    def levels(self) -> int:
        return 1 << self.bits

    @property
    def hi_per_word(self) -> int:
        return WORD_BITS // self.hi_bits

    @property
    def segments(self) -> tuple:
        """((format, rows), ...) of a row-segmented weight; () for a plain one."""
        return ()

    def tensor_suffixes(self) -> tuple[str, ...]:
        """Names of the stored tensors of one weight, in tensor-cache order."""
        if not self.quantized:
            return ("weight",)
        if self.native:
            return (
                ("q_weight",)
                + (("q_high",) if self.hi_bits else ())
                + ("q_scale",)
                + (("q_super",) if self.scale_kind == "k" else ())
            )
        return ("q_weight", "q_scale", "q_min") if self.has_min else ("q_weight", "q_scale")

    def shapes(self, out_dim: int, in_dim: int, scale_dtype: str) -> list[tuple[tuple[int, int], str]]:
        """(shape, dtype) of each stored tensor for an [out, in] weight."""
        if not self.quantized:
            return [((out_dim, in_dim), scale_dtype)]
        self.check_input(in_dim)
        packed = ((out_dim, in_dim // self.per_word), "uint32")
        if self.native:
            out = [packed]
            if self.hi_bits:
                out.append(((out_dim, in_dim // self.hi_per_word), "uint32"))
            per_word = 32 // self.scale_bits
            out.append(((out_dim, -(-(in_dim // self.group) // per_word)), "uint32"))
            if self.scale_kind == "k":
                supers = in_dim // self.super_group
                out.append(((out_dim, supers if self.has_min else -(-supers // 2)), "uint32"))
            return out
        groups = ((out_dim, in_dim // self.group), scale_dtype)
        return [packed, groups, groups] if self.has_min else [packed, groups]

    def check_input(self, in_dim: int) -> None:
        block = self.super_group if self.scale_kind == "k" else self.group
        if in_dim % block or in_dim % self.per_word or (self.hi_bits and in_dim % self.hi_per_word):
            raise BuildError(
                f"cannot store a weight with input size {in_dim} as {self.name}: not a multiple of {block}",
                "use a q0 quantization (q0f16 / q0f32) for this model",
            )


@dataclass(frozen=True)
class SegmentedFormat:
    """A weight whose output rows are in several formats (a fused q/k/v of Q4_K q, k and Q6_K v): each
    segment keeps its own GGUF-native layout, stored as `s<i>_<suffix>` tensors, and is computed as its own
    linear (nn/layers.apply_linear), the outputs concatenated. Named `seg:<format>*<rows>+...`."""

    segments: tuple  # ((WeightFormat, rows), ...)

    @property
    def name(self) -> str:
        return "seg:" + "+".join(f"{f.name}*{rows}" for f, rows in self.segments)

    quantized = True
    bits = -1  # not a single-plane format

    def tensor_suffixes(self) -> tuple[str, ...]:
        return tuple(f"s{i}_{s}" for i, (f, _) in enumerate(self.segments) for s in f.tensor_suffixes())

    def shapes(self, out_dim: int, in_dim: int, scale_dtype: str) -> list:
        if out_dim != sum(rows for _, rows in self.segments):
            raise BuildError(
                f"weight format {self.name} covers {sum(r for _, r in self.segments)} rows, not {out_dim}",
                "rebuild the variant",
            )
        return [s for f, rows in self.segments for s in f.shapes(rows, in_dim, scale_dtype)]

    def check_input(self, in_dim: int) -> None:
        for f, _ in self.segments:
            f.check_input(in_dim)


def is_weight_part(suffix: str) -> bool:
    """Whether `suffix` names a stored tensor of a quantized weight (any format, segments included)."""
    return suffix.split("_", 1)[1] in _PARTS if suffix[:1] == "s" and suffix[1:2].isdigit() else suffix in _PARTS


_PARTS = ("q_weight", "q_high", "q_scale", "q_min", "q_super")


def is_aux_part(suffix: str) -> bool:
    """A stored tensor of a quantized weight other than the one that carries its name and param count."""
    return is_weight_part(suffix) and suffix not in ("q_weight", "s0_q_weight")


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

# GGUF-native layouts (issue 19): the block types' own bits per weight, scales as the GGUF's f16 bits
# (identical for f16 and f32 variants). Q5_* add a 1-bit plane, Q6_K a 2-bit plane to the 4-bit one.
G_Q4_0 = WeightFormat("gguf_q4_0", 4, 32, zero=8, scale_kind="f16")  # 4.5 bpw
G_Q4_1 = WeightFormat("gguf_q4_1", 4, 32, has_min=True, scale_kind="f16")  # 5
G_Q5_0 = WeightFormat("gguf_q5_0", 4, 32, zero=16, hi_bits=1, scale_kind="f16")  # 5.5
G_Q5_1 = WeightFormat("gguf_q5_1", 4, 32, has_min=True, hi_bits=1, scale_kind="f16")  # 6
G_Q8_0 = WeightFormat("gguf_q8_0", 8, 32, zero=128, scale_kind="f16")  # 8.5 (int8 stored + 128)
G_Q4_K = WeightFormat("gguf_q4_k", 4, 32, has_min=True, scale_kind="k")  # 4.625 (GGUF: 4.5)
G_Q5_K = WeightFormat("gguf_q5_k", 4, 32, has_min=True, hi_bits=1, scale_kind="k")  # 5.625 (5.5)
G_Q6_K = WeightFormat("gguf_q6_k", 4, 16, zero=32, hi_bits=2, scale_kind="k", sub_signed=True)  # 6.5625

FORMATS = {
    f.name: f
    for f in (FLOAT, MLC_Q4, Q4_MIN, Q4_SYM, Q8_SYM, Q8_MIN, Q8_SYM16, Q8_MIN16)
    + (G_Q4_0, G_Q4_1, G_Q5_0, G_Q5_1, G_Q8_0, G_Q4_K, G_Q5_K, G_Q6_K)
}


def get_format(name: str):
    try:
        if name.startswith("seg:"):
            return SegmentedFormat(
                tuple((FORMATS[f], int(rows)) for f, rows in (part.rsplit("*", 1) for part in name[4:].split("+")))
            )
        return FORMATS[name]
    except (KeyError, ValueError):
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


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """[out, in] integers < 2^bits -> [out, in * bits / 32] uint32 (element r of a word at bits * r)."""
    per_word = WORD_BITS // bits
    out_dim, in_dim = q.shape
    q = q.astype(np.uint32).reshape(out_dim, in_dim // per_word, per_word)
    shifts = np.arange(per_word, dtype=np.uint32) * bits
    return np.bitwise_or.reduce(q << shifts, axis=2).astype(np.uint32)


def unpack_bits(words: np.ndarray, bits: int) -> np.ndarray:
    per_word = WORD_BITS // bits
    out_dim, n = words.shape
    shifts = np.arange(per_word, dtype=np.uint32) * bits
    return ((words[..., None] >> shifts) & np.uint32((1 << bits) - 1)).reshape(out_dim, n * per_word)


def pack_halves(h: np.ndarray) -> np.ndarray:
    """[out, n] uint16 -> [out, ceil(n / 2)] uint32, element j in the low half of word j // 2 when j is even."""
    out_dim, n = h.shape
    if n % 2:
        h = np.concatenate([h, np.zeros((out_dim, 1), h.dtype)], axis=1)
    return np.ascontiguousarray(h.astype(np.uint16)).view(np.uint32).reshape(out_dim, -1)


def pack_bytes(b: np.ndarray) -> np.ndarray:
    """[out, n] uint8 -> [out, ceil(n / 4)] uint32, element j in byte j % 4 of word j // 4."""
    out_dim, n = b.shape
    if n % 4:
        b = np.concatenate([b, np.zeros((out_dim, 4 - n % 4), np.uint8)], axis=1)
    return np.ascontiguousarray(b.astype(np.uint8)).view(np.uint32).reshape(out_dim, -1)


def _halves(words: np.ndarray, n: int) -> np.ndarray:
    """Inverse of pack_halves, decoded as f16 -> float32 (exact)."""
    return np.ascontiguousarray(words).view(np.float16)[:, :n].astype(np.float32)


def split_planes(q: np.ndarray, fmt: WeightFormat) -> list[np.ndarray]:
    """[out, in] integers < 2^(bits + hi_bits) -> [q_weight (low plane), q_high (high plane, if any)]."""
    out = [pack_bits(q & ((1 << fmt.bits) - 1), fmt.bits)]
    if fmt.hi_bits:
        out.append(pack_bits(q >> fmt.bits, fmt.hi_bits))
    return out


def _pair16(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Two [out, n] 16-bit arrays -> [out, n] uint32 words lo | hi << 16."""
    return lo.astype(np.uint32) | (hi.astype(np.uint32) << np.uint32(16))


def join_scales(fmt: WeightFormat, native: dict[str, np.ndarray]) -> list[np.ndarray]:
    """[q_scale (, q_super)] of a native format from its raw parts ([out, n] each): f16 bits "d" (and "m")
    per group, or K-quant bytes "sc" (and "mn") per group and f16 bits "d" (and "dmin") per super-block."""
    if fmt.scale_kind == "f16":
        return [_pair16(native["d"], native["m"]) if fmt.has_min else pack_halves(native["d"])]
    if fmt.has_min:
        sub = native["sc"].astype(np.uint16) | (native["mn"].astype(np.uint16) << np.uint16(8))
        return [pack_halves(sub), _pair16(native["d"], native["dmin"])]
    return [pack_bytes(native["sc"]), pack_halves(native["d"])]


def _dequantize_native(fmt: WeightFormat, tensors: list[np.ndarray]) -> np.ndarray:
    q = unpack_bits(tensors[0], fmt.bits)
    if fmt.hi_bits:
        q = q | (unpack_bits(tensors[1], fmt.hi_bits) << np.uint32(fmt.bits))
    scales = np.ascontiguousarray(tensors[2 if fmt.hi_bits else 1])
    q = q.astype(np.float32)
    if fmt.zero:
        q = q - np.float32(fmt.zero)
    out_dim, in_dim = q.shape
    groups = in_dim // fmt.group
    if fmt.scale_kind == "f16":
        halves = _halves(scales, 2 * scales.shape[1])
        if fmt.has_min:
            scale, minimum = halves[:, 0::2], halves[:, 1::2]
        else:
            scale, minimum = halves[:, :groups], None
    else:
        rep = fmt.super_group // fmt.group
        supers = in_dim // fmt.super_group
        sup = np.ascontiguousarray(tensors[-1])
        minimum = None
        if fmt.has_min:
            sub = scales.view(np.uint16)[:, :groups]
            sc, mn = (sub & 0xFF).astype(np.float32), (sub >> 8).astype(np.float32)
            halves = _halves(sup, 2 * supers)
            d, dmin = halves[:, 0::2], halves[:, 1::2]
            minimum = -(np.repeat(dmin, rep, axis=1) * mn)
        else:
            sc = scales.view(np.int8)[:, :groups].astype(np.float32)
            d = _halves(sup, supers)
        scale = np.repeat(d, rep, axis=1) * sc
    w = q * np.repeat(scale, fmt.group, axis=1)
    if minimum is not None:
        w = w + np.repeat(minimum, fmt.group, axis=1)
    return w


def dequantize(fmt, tensors: list[np.ndarray]) -> np.ndarray:
    """Stored tensors -> float32 [out, in], evaluated exactly like the compiled kernels do."""
    if fmt.segments:
        parts, i = [], 0
        for f, _ in fmt.segments:
            n = len(f.tensor_suffixes())
            parts.append(dequantize(f, tensors[i : i + n]))
            i += n
        return np.concatenate(parts)
    if not fmt.quantized:
        return np.asarray(tensors[0], dtype=np.float32)
    if fmt.native:
        return _dequantize_native(fmt, tensors)
    q = unpack(tensors[0], fmt).astype(np.float32)
    if fmt.zero:
        q = q - np.float32(fmt.zero)
    scale = np.repeat(np.asarray(tensors[1], dtype=np.float32), fmt.group, axis=1)
    w = q * scale
    if fmt.has_min:
        w = w + np.repeat(np.asarray(tensors[2], dtype=np.float32), fmt.group, axis=1)
    return w


# Row blocks of a split weight start at multiples of this (whole workgroup tiles of the GEMV/matmul kernels).
SPLIT_ROW_ALIGN = 64


def split_rows(fmt, stored: list[np.ndarray], limit: int) -> tuple:
    """(format, stored tensors) of a weight whose every stored tensor fits one GPU binding of `limit` bytes.

    WebGPU binds a storage buffer of at most maxStorageBufferBindingSize bytes (128 MiB unless the page asks
    for more, which many adapters cannot give): a 151,936 x 896 8-bit output matrix is 136 MB. Such a weight
    becomes a segmented one (SegmentedFormat: one linear per segment, concatenated; the embedding selects
    the segment by row) of equal row blocks in its own format, so its bytes and values are unchanged.
    Every stored tensor is [rows, ...], so a row block is a slice of each."""
    segments = fmt.segments or ((fmt, int(stored[0].shape[0])),)
    out_segments: list = []
    out_stored: list[np.ndarray] = []
    i = 0
    for f, rows in segments:
        tensors = stored[i : i + len(f.tensor_suffixes())]
        i += len(tensors)
        biggest = max(t.nbytes for t in tensors)
        if biggest <= limit:
            out_segments.append((f, rows))
            out_stored += tensors
            continue
        row_bytes = max(-(-t.nbytes // rows) for t in tensors)
        fit = limit // row_bytes
        if fit < 1:
            raise BuildError(
                f"one row of a {f.name} weight is {row_bytes} bytes, more than a GPU binding ({limit} bytes)",
                "this model's rows are too long for WebGPU; report it",
            )
        blocks = -(-rows // fit)
        per = -(-rows // blocks)
        aligned = -(-per // SPLIT_ROW_ALIGN) * SPLIT_ROW_ALIGN
        per = aligned if aligned <= fit else per
        for start in range(0, rows, per):
            stop = min(start + per, rows)
            out_segments.append((f, stop - start))
            out_stored += [t[start:stop] for t in tensors]
    if len(out_segments) == len(segments):
        return fmt, stored
    return SegmentedFormat(tuple(out_segments)), out_stored
