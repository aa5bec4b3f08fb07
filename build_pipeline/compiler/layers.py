"""Quantization-aware layers for the model definitions (tvm.relax.frontend.nn).

Every linear is one TE compute that reads the stored weight layout directly: for quantized weights
the packed integers are unpacked *inside* the reduction, so the dequantized weight is never materialised
(dlight turns the decode case into a single GEMV kernel, the prefill case into one matmul kernel).
Weights stay in Hugging Face's [out, in] order and the compute indexes them as such, so no
transpose runs per call. Accumulation is always float32 (also for f16 variants); the result is
cast to the layer's output dtype (float32 for the logits).

Parameter names match build_pipeline/convert.py: `<base>.q_weight`, `<base>.q_scale` (+ `<base>.q_min`
for formats with a minimum) or `<base>.weight` (float), plus `<base>.bias` when the layer has one.
Each weight has its own storage format (weight_formats.py), looked up by its base name in the scheme.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from build_pipeline.quantization import Scheme
from build_pipeline.weight_formats import WeightFormat

ACC = "float32"


def _dequant(fmt: WeightFormat, tensors, row, col):
    """One float32 weight element (row, col): (q - zero) * scale (+ min), as weight_formats.dequantize."""
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


def linear_te(fmt: WeightFormat, in_features: int, out_dtype: str, has_bias: bool):
    """TE function (x, *weight tensors[, bias]) -> x @ W^T (+ bias), reading W in [out, in] order."""
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
                v = v + bias[idx[-1]].astype(ACC)
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
