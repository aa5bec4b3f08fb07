"""Quantization-aware layers for the model definitions (tvm.relax.frontend.nn).

Every linear is one TE compute that reads the stored weight layout directly: for quantized weights
the packed integers are unpacked *inside* the reduction, so the dequantized weight is never materialised
(dlight turns the decode case into a single GEMV kernel, the prefill case into one matmul kernel).
Weights stay in Hugging Face's [out, in] order and the compute indexes them as such, so no
transpose runs per call. Accumulation is always float32 (also for f16 variants); the result is
cast to the layer's output dtype (float32 for the logits).

Parameter names match build_pipeline/convert.py: `<base>.<suffix>` for each of the format's
`tensor_suffixes()` (q_weight, q_scale, q_min; GGUF-native formats q_weight, q_high, q_scale, q_super;
a row-segmented weight `s<i>_<suffix>` per segment, computed as one linear per segment, concatenated)
or `<base>.weight` (float), plus `<base>.bias` when the layer has one.
Each weight has its own storage format (weight_formats.py), looked up by its base name in the scheme.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from build_pipeline.quantization import Scheme
from build_pipeline.weight_formats import WeightFormat

ACC = "float32"


def _u32(value: int):
    return tirx.const(value, "uint32")


def _field(words, row, index, bits: int):
    """Element `index` of a row of `bits`-wide fields packed little-endian in uint32 words (uint32)."""
    per_word = 32 // bits
    shift = ((index % per_word) * bits).astype("uint32")
    word = words[row, index // per_word]
    return tirx.bitwise_and(tirx.shift_right(word, shift), _u32((1 << bits) - 1))


def f16_bits_to_f32(h):
    """uint32 holding f16 bits (< 2^16) -> the exact float32 value, with integer ops only (no shader-f16) and
    no branches. The exponent is rebiased (reinterpret; WGSL bitcast<f32>): for a normal half that is its
    value; for zero and subnormals (exponent 0) it gives 2^-15 + mantissa * 2^-25, so that is doubled and
    2^-14 subtracted (both exact; no f32 subnormal is ever formed, which GPUs may flush). The sign multiplies at the end. A
    select here (TIR lowers it to if/else around loads) made ~16 branches per weight element, which
    SwiftShader's shader compiler crashed on. GGUF scales are finite."""
    mag = tirx.bitwise_and(h, _u32(0x7FFF))
    rebiased = tirx.reinterpret(ACC, tirx.shift_left(mag, _u32(13)) + _u32(112 << 23))
    tiny = (mag < _u32(1024)).astype(ACC)  # 1 for zero and subnormals
    value = rebiased * (tirx.const(1.0, ACC) + tiny) - tiny * tirx.const(2.0**-14, ACC)
    negative = tirx.shift_right(h, _u32(15)).astype(ACC)  # 0 or 1
    return value * (tirx.const(1.0, ACC) - tirx.const(2.0, ACC) * negative)


def _dequant_native(fmt: WeightFormat, tensors, row, col):
    """A GGUF-native format's element, as weight_formats._dequantize_native: one load per stored tensor."""
    q = _field(tensors[0], row, col, fmt.bits)
    if fmt.hi_bits:
        q = tirx.bitwise_or(q, tirx.shift_left(_field(tensors[1], row, col, fmt.hi_bits), _u32(fmt.bits)))
    scales = tensors[2 if fmt.hi_bits else 1]
    q = q.astype(ACC)
    if fmt.zero:
        q = q - tirx.const(fmt.zero, ACC)
    g = col // fmt.group
    minimum = None
    if fmt.scale_kind == "f16":
        if fmt.has_min:
            word = scales[row, g]
            scale = f16_bits_to_f32(tirx.bitwise_and(word, _u32(0xFFFF)))
            minimum = f16_bits_to_f32(tirx.shift_right(word, _u32(16)))
        else:
            scale = f16_bits_to_f32(_field(scales, row, g, 16))
    else:  # "k": d * sc (+ -(dmin * mn)), both products exact in float32
        s = col // fmt.super_group
        if fmt.has_min:
            sub = _field(scales, row, g, 16)
            sc = tirx.bitwise_and(sub, _u32(0xFF))
            word = tensors[-1][row, s]
            d = f16_bits_to_f32(tirx.bitwise_and(word, _u32(0xFFFF)))
            dmin = f16_bits_to_f32(tirx.shift_right(word, _u32(16)))
            minimum = -(dmin * tirx.shift_right(sub, _u32(8)).astype(ACC))
        else:
            sc = _field(scales, row, g, 8)
            if fmt.sub_signed:
                sc = tirx.bitwise_xor(sc, _u32(128)).astype("int32") - tirx.const(128, "int32")
            d = f16_bits_to_f32(_field(tensors[-1], row, s, 16))
        scale = d * sc.astype(ACC)
    value = q * scale
    if minimum is not None:
        value = value + minimum
    return value


def _dequant(fmt: WeightFormat, tensors, row, col):
    """One float32 weight element (row, col): (q - zero) * scale (+ min), as weight_formats.dequantize."""
    if fmt.native:
        return _dequant_native(fmt, tensors, row, col)
    word = tensors[0][row, col // fmt.per_word]
    shift = ((col % fmt.per_word) * fmt.bits).astype("uint32")
    q = tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const(fmt.levels - 1, "uint32")).astype(ACC)
    if fmt.zero:
        q = q - tirx.const(fmt.zero, ACC)
    value = q * tensors[1][row, col // fmt.group].astype(ACC)
    if fmt.has_min:
        value = value + tensors[2][row, col // fmt.group].astype(ACC)
    return value


def _weight_elem(fmt: WeightFormat, tensors, row, col):
    if fmt.segments:
        # Row-segmented weight (mixed fused GGUF types): each segment reads its own tensors; if_then_else
        # evaluates only the taken branch (no out-of-bounds reads of the other segments).
        branches, start, i = [], 0, 0
        for f, rows in fmt.segments:
            n = len(f.tensor_suffixes())
            branches.append((start, rows, f, tensors[i : i + n]))
            start, i = start + rows, i + n
        start, _, f, ts = branches[-1]
        value = _weight_elem(f, ts, row - start, col)
        for start, rows, f, ts in reversed(branches[:-1]):
            value = tirx.if_then_else(row < start + rows, _weight_elem(f, ts, row - start, col), value)
        return value
    if fmt.quantized:
        return _dequant(fmt, tensors, row, col)
    return tensors[0][row, col].astype(ACC)


def _declare_weight(module: nn.Module, fmt: WeightFormat, out_dim: int, in_dim: int, dtype: str) -> list:
    """Create the stored tensors of one weight as parameters of `module` (tensor-cache order)."""
    tensors = []
    for suffix, (shape, dt) in zip(fmt.tensor_suffixes(), fmt.shapes(out_dim, in_dim, dtype), strict=True):
        setattr(module, suffix, nn.Parameter(shape, dt))
        tensors.append(suffix)
    return tensors


def linear_te(fmt: WeightFormat, in_features: int, out_dtype: str, has_bias: bool, bias_offset: int = 0):
    """TE function (x, *weight tensors[, bias]) -> x @ W^T (+ bias[bias_offset + o]), reading W in [out, in]
    order."""
    n_weights = len(fmt.tensor_suffixes())

    def compute(x, *tensors):
        weights = tensors[:n_weights]
        bias = tensors[len(weights)] if has_bias else None
        lead = list(x.shape[:-1])
        out_features = weights[0].shape[0]
        k = te.reduce_axis((0, in_features), name="k")
        # A separate (spatial) dequantize block inside the same PrimFunc: dlight inlines it into the
        # matmul's operand loads, and its Matmul rule only recognises plain [o, k] weight reads.
        w = te.compute((out_features, in_features), lambda o, i: _weight_elem(fmt, weights, o, i), name="dequantize")

        def body(*idx):
            *pre, o = idx
            return te.sum(x[(*pre, k)].astype(ACC) * w[o, k], axis=k)

        acc = te.compute((*lead, out_features), body, name="matmul")
        if bias is None and out_dtype == ACC:
            return acc

        def epilogue(*idx):
            v = acc[idx]
            if bias is not None:
                v = v + bias[idx[-1] + bias_offset].astype(ACC)
            return v.astype(out_dtype)

        return te.compute((*lead, out_features), epilogue, name="matmul_epilogue")

    return compute


class QuantLinear(nn.Module):
    """y = x @ W^T (+ b) with W stored in its format; no transpose, no materialised weight.

    `name` is the weight's base name in the tensor cache (e.g. "model.layers.0.mlp.down_proj"):
    the scheme knows each weight's format by it."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        scheme: Scheme,
        name: str,
        bias: bool = False,
        out_dtype: str | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scheme = scheme
        self.fmt = scheme.format_of(name) if scheme.quantized else scheme.default_format
        self.out_dtype = out_dtype or scheme.dtype
        self._weights = _declare_weight(self, self.fmt, out_features, in_features, scheme.dtype)
        self.bias = nn.Parameter((out_features,), scheme.dtype) if bias else None

    def weight_tensors(self) -> list:
        return [getattr(self, n) for n in self._weights]

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return apply_linear(
            self.fmt, self.scheme.dtype, self.in_features, x, self.weight_tensors(), self.bias, self.out_dtype
        )


def apply_linear(
    fmt: WeightFormat,
    dtype: str,
    in_features: int,
    x: nn.Tensor,
    weights: list,
    bias=None,
    out_dtype: str | None = None,
    name: str = "linear",
) -> nn.Tensor:
    if fmt.segments:
        # A row-segmented weight (mixed fused GGUF types): one linear per segment, each in its own format,
        # concatenated. (One kernel selecting the segment per row binds every segment's buffers (10 for Q4_K +
        # Q6_K) and came to ~2,000 WGSL lines, over the swiftshader profile's 1,500-line guard.)
        outs, start, i = [], 0, 0
        for f, rows in fmt.segments:
            n = len(f.tensor_suffixes())
            seg_args = [x, *weights[i : i + n]] + ([bias] if bias is not None else [])
            fn = linear_te(f, in_features, out_dtype or dtype, bias is not None, start)
            outs.append(op.tensor_expr_op(fn, name, args=seg_args))
            start, i = start + rows, i + n
        return op.concat(outs, dim=-1)
    args = [x, *weights] + ([bias] if bias is not None else [])
    fn = linear_te(fmt, in_features, out_dtype or dtype, bias is not None)
    return op.tensor_expr_op(fn, name, args=args)


class QuantEmbedding(nn.Module):
    """Token embedding stored like a linear [vocab, hidden]; also usable as a tied lm_head."""

    def __init__(self, vocab_size: int, hidden_size: int, scheme: Scheme, name: str = "model.embed_tokens"):
        super().__init__()
        self.vocab_size, self.hidden_size, self.scheme = vocab_size, hidden_size, scheme
        self.fmt = scheme.format_of(name) if scheme.quantized else scheme.default_format
        self._weights = _declare_weight(self, self.fmt, vocab_size, hidden_size, scheme.dtype)

    def weight_tensors(self) -> list:
        return [getattr(self, n) for n in self._weights]

    def forward(self, input_ids: nn.Tensor) -> nn.Tensor:
        fmt, dtype, hidden = self.fmt, self.scheme.dtype, self.hidden_size

        def compute(ids, *weights):
            return te.compute(
                (ids.shape[0], hidden),
                lambda i, j: _weight_elem(fmt, weights, ids[i], j).astype(dtype),
                name="embedding",
            )

        return op.tensor_expr_op(compute, "embed", args=[input_ids, *self.weight_tensors()])

    def lm_head(self, x: nn.Tensor) -> nn.Tensor:
        """Tied output projection: float32 logits."""
        return apply_linear(
            self.fmt, self.scheme.dtype, self.hidden_size, x, self.weight_tensors(), None, ACC, "lm_head"
        )
