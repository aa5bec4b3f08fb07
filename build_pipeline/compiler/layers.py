"""Quantization-aware layers for the model definitions (tvm.relax.frontend.nn).

Every linear is one TE compute that reads the stored weight layout directly: for q4 schemes the
4-bit nibbles are unpacked *inside* the reduction, so the dequantized weight is never materialised
(dlight turns the decode case into a single GEMV kernel, the prefill case into one matmul kernel).
Weights stay in Hugging Face's [out, in] order and the compute indexes them as such, so no
transpose runs per call. Accumulation is always float32 (also for f16 variants); the result is
cast to the layer's output dtype (float32 for the logits).

Parameter names match build_pipeline/convert.py: `<base>.q_weight`, `<base>.q_scale` (q4) or
`<base>.weight` (q0), plus `<base>.bias` when the layer has one.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from build_pipeline.quantization import GROUP_SIZE, MAX_INT, NIBBLES_PER_WORD, Scheme

ACC = "float32"


def _dequant(q_weight, q_scale, row, col):
    """One float32 weight element (row, col) from the packed q4 layout."""
    word = q_weight[row, col // NIBBLES_PER_WORD]
    shift = ((col % NIBBLES_PER_WORD) * 4).astype("uint32")
    nibble = tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const(0xF, "uint32"))
    return (nibble.astype(ACC) - tirx.const(MAX_INT, ACC)) * q_scale[row, col // GROUP_SIZE].astype(ACC)


def _weight_elem(scheme: Scheme, tensors, row, col):
    if scheme.quantized:
        return _dequant(tensors[0], tensors[1], row, col)
    return tensors[0][row, col].astype(ACC)


def linear_te(scheme: Scheme, in_features: int, out_dtype: str, has_bias: bool):
    """TE function (x, *weight tensors[, bias]) -> x @ W^T (+ bias), reading W in [out, in] order."""

    def compute(x, *tensors):
        weights = tensors[:2] if scheme.quantized else tensors[:1]
        bias = tensors[len(weights)] if has_bias else None
        lead = list(x.shape[:-1])
        out_features = weights[0].shape[0]
        k = te.reduce_axis((0, in_features), name="k")
        # A separate (spatial) dequantize block inside the same PrimFunc: dlight inlines it into the
        # matmul's operand loads, and its Matmul rule only recognises plain [o, k] weight reads.
        w = te.compute((out_features, in_features), lambda o, i: _weight_elem(scheme, weights, o, i),
                       name="dequantize")

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
    """y = x @ W^T (+ b) with W stored per the scheme; no transpose, no materialised weight."""

    def __init__(self, in_features: int, out_features: int, scheme: Scheme, bias: bool = False,
                 out_dtype: str | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scheme = scheme
        self.out_dtype = out_dtype or scheme.dtype
        if scheme.quantized:
            self.q_weight = nn.Parameter((out_features, in_features // NIBBLES_PER_WORD), "uint32")
            self.q_scale = nn.Parameter((out_features, in_features // GROUP_SIZE), scheme.dtype)
        else:
            self.weight = nn.Parameter((out_features, in_features), scheme.dtype)
        self.bias = nn.Parameter((out_features,), scheme.dtype) if bias else None

    def weight_tensors(self) -> list:
        return [self.q_weight, self.q_scale] if self.scheme.quantized else [self.weight]

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return apply_linear(self.scheme, self.in_features, x, self.weight_tensors(), self.bias,
                            self.out_dtype)


def apply_linear(scheme: Scheme, in_features: int, x: nn.Tensor, weights: list, bias=None,
                 out_dtype: str | None = None, name: str = "linear") -> nn.Tensor:
    args = [x, *weights] + ([bias] if bias is not None else [])
    fn = linear_te(scheme, in_features, out_dtype or scheme.dtype, bias is not None)
    return op.tensor_expr_op(fn, name, args=args)


class QuantEmbedding(nn.Module):
    """Token embedding stored like a linear [vocab, hidden]; also usable as a tied lm_head."""

    def __init__(self, vocab_size: int, hidden_size: int, scheme: Scheme):
        super().__init__()
        self.vocab_size, self.hidden_size, self.scheme = vocab_size, hidden_size, scheme
        if scheme.quantized:
            self.q_weight = nn.Parameter((vocab_size, hidden_size // NIBBLES_PER_WORD), "uint32")
            self.q_scale = nn.Parameter((vocab_size, hidden_size // GROUP_SIZE), scheme.dtype)
        else:
            self.weight = nn.Parameter((vocab_size, hidden_size), scheme.dtype)

    def weight_tensors(self) -> list:
        return [self.q_weight, self.q_scale] if self.scheme.quantized else [self.weight]

    def forward(self, input_ids: nn.Tensor) -> nn.Tensor:
        scheme, hidden = self.scheme, self.hidden_size

        def compute(ids, *weights):
            return te.compute(
                (ids.shape[0], hidden),
                lambda i, j: _weight_elem(scheme, weights, ids[i], j).astype(scheme.dtype),
                name="embedding",
            )

        return op.tensor_expr_op(compute, "embed", args=[input_ids, *self.weight_tensors()])

    def lm_head(self, x: nn.Tensor) -> nn.Tensor:
        """Tied output projection: float32 logits."""
        return apply_linear(self.scheme, self.hidden_size, x, self.weight_tensors(), None, ACC, "lm_head")
