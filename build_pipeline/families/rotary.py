"""RoPE computed inside a model (TVM; imported only by model.py files).

For layers whose rotation the paged KV cache's RoPE kernel cannot express (one theta for all layers,
RoPE after any q/k norm): the cache runs with RopeMode.NONE and the layer rotates q and k here.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op


def apply_rope(
    x: nn.Tensor, positions: nn.Tensor, inv_freq: np.ndarray, rotary_dim: int, scale: float = 1.0
) -> nn.Tensor:
    """Rotate-half RoPE of x [b, s, heads, head_dim] at `positions` [s] on the first `rotary_dim`
    features, in float32, cos/sin times `scale`."""
    half = rotary_dim // 2
    inv = nn.Tensor.from_const(np.asarray(inv_freq, dtype=np.float32))

    def compute(x, pos, inv):
        def body(b, s, h, d):
            angle = pos[s].astype("float32") * inv[tirx.if_then_else(d < half, d, d - half)]
            other = tirx.if_then_else(d < half, -x[b, s, h, d + half], x[b, s, h, d - half]).astype("float32")
            rotated = (x[b, s, h, d].astype("float32") * te.cos(angle) + other * te.sin(angle)) * scale
            return tirx.if_then_else(d < rotary_dim, rotated.astype(x.dtype), x[b, s, h, d])

        return te.compute(x.shape, body, name="rope")

    return op.tensor_expr_op(compute, "rope", args=[x, positions, inv])
