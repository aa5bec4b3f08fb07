"""Gemma 3 as a TVM nn.Module with web-llm's single-sequence ABI (embed, prefill, decode, KV cache).

What TVM 0.27's paged KV cache cannot express is done here instead:
- local and global layers have different rope bases, but the cache's RoPE kernel has one theta, so the
  cache runs with RopeMode.NONE and each layer rotates q/k itself (positions from the cache);
- Gemma 3's per-head q/k RMSNorm comes before RoPE, which also needs the rotation in the model.
Sliding-window layers are the cache's own per-layer "mha_sliding" kind (layer_sliding_window_size).
That kind windows only the cached tokens: a prefill chunk attends to itself unwindowed, and a query
whose whole window lies inside its chunk gets an empty cached part (NaN). Both vanish when
prefill_chunk_size < sliding_window (measured: exact at window - 1, NaN at window), so larger chunks
are refused.
Gemma 2's attention-logit soft-capping has no counterpart in the cache's attention kernels: building it
fails with a BuildError (mlc-llm silently ignores the cap; Lantern does not build a different model).
"""

from __future__ import annotations

import numpy as np
from tvm import relax as rx
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache

from build_pipeline.compiler.layers import QuantEmbedding, QuantLinear
from build_pipeline.errors import BuildError
from build_pipeline.families.gemma.config import GemmaConfig

# The paged KV cache kernels the sliding-window layers run (compiler/module.py keeps them).
KV_KERNELS_USED = ("sliding-window-prefill", "sliding-window-decode")


def check_expressible(c: GemmaConfig, prefill_chunk_size: int) -> None:
    """BuildError for what web-llm's library (TVM 0.27 paged KV cache kernels) cannot compute."""
    if any(c.is_sliding(i) for i in range(c.num_hidden_layers)) and prefill_chunk_size >= c.sliding_window:
        raise BuildError(
            f"prefill_chunk_size {prefill_chunk_size} is not below {c.family}'s sliding window "
            f"{c.sliding_window}: TVM 0.27's per-layer sliding-window attention does not window tokens "
            "within one prefill chunk",
            f"set prefill_chunk_size to at most {c.sliding_window - 1} in the model config",
        )
    if c.attn_logit_softcapping is not None:
        raise BuildError(
            f"{c.family} attention-logit soft-capping (cap {c.attn_logit_softcapping:g}) cannot be compiled: "
            "TVM 0.27's paged-KV-cache attention kernels, which web-llm's library must use, have no "
            "soft-cap step",
            "build a Gemma 3 model instead, or serve this Gemma 2 model through the llama.cpp server fallback",
        )


class GemmaRMSNorm(nn.Module):
    """RMSNorm scaled by (1 + weight): the parameter keeps Hugging Face's value."""

    def __init__(self, dim: int, eps: float, dtype: str):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter((dim,), dtype)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return op.rms_norm(x, self.weight + 1.0, axes=[-1], epsilon=self.eps)


def apply_rope(x: nn.Tensor, positions: nn.Tensor, inv_freq: np.ndarray, rotary_dim: int,
               scale: float = 1.0) -> nn.Tensor:
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


class GemmaAttention(nn.Module):
    def __init__(self, c: GemmaConfig, scheme, layer_id: int):
        super().__init__()
        self.layer_id, self.config = layer_id, c
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.inv_freq = c.rope_inv_freq(c.layer_types[layer_id])
        base = f"model.layers.{layer_id}.self_attn"
        qkv_rows = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
        self.qkv_proj = QuantLinear(c.hidden_size, qkv_rows, scheme, f"{base}.qkv_proj")
        if c.qk_norm:
            self.q_norm = GemmaRMSNorm(c.head_dim, c.rms_norm_eps, scheme.dtype)
            self.k_norm = GemmaRMSNorm(c.head_dim, c.rms_norm_eps, scheme.dtype)
        self.o_proj = QuantLinear(c.num_attention_heads * c.head_dim, c.hidden_size, scheme, f"{base}.o_proj")

    def forward(self, x: nn.Tensor, positions: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
        b, s, _ = x.shape
        nh, nkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = op.reshape(self.qkv_proj(x), (b, s, nh + 2 * nkv, hd))
        q, k, v = op.split(qkv, [nh, nh + nkv], axis=2)
        if self.config.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, positions, self.inv_freq, hd), apply_rope(k, positions, self.inv_freq, hd)
        out = kv.attention_with_fused_qkv(self.layer_id, op.concat([q, k, v], dim=2), nh,
                                          sm_scale=self.config.query_pre_attn_scalar ** -0.5)
        return self.o_proj(op.reshape(out, (b, s, nh * hd)))


class GemmaMLP(nn.Module):
    def __init__(self, c: GemmaConfig, scheme, layer_id: int):
        super().__init__()
        base = f"model.layers.{layer_id}.mlp"
        self.gate_up_proj = QuantLinear(c.hidden_size, 2 * c.intermediate_size, scheme, f"{base}.gate_up_proj")
        self.down_proj = QuantLinear(c.intermediate_size, c.hidden_size, scheme, f"{base}.down_proj")

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        gate, up = op.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(op.gelu(gate, approximate="tanh") * up)


class GemmaDecoderLayer(nn.Module):
    # Attribute order = parameter order = weights.weight_map order (tensor-cache order).
    def __init__(self, c: GemmaConfig, scheme, layer_id: int):
        super().__init__()
        eps, dtype = c.rms_norm_eps, scheme.dtype
        self.input_layernorm = GemmaRMSNorm(c.hidden_size, eps, dtype)
        self.self_attn = GemmaAttention(c, scheme, layer_id)
        self.post_attention_layernorm = GemmaRMSNorm(c.hidden_size, eps, dtype)
        self.pre_feedforward_layernorm = GemmaRMSNorm(c.hidden_size, eps, dtype)
        self.mlp = GemmaMLP(c, scheme, layer_id)
        self.post_feedforward_layernorm = GemmaRMSNorm(c.hidden_size, eps, dtype)

    def forward(self, x: nn.Tensor, positions: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), positions, kv))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class GemmaModel(nn.Module):
    def __init__(self, c: GemmaConfig, scheme):
        super().__init__()
        self.embed_tokens = QuantEmbedding(c.vocab_size, c.hidden_size, scheme)
        self.layers = nn.ModuleList([GemmaDecoderLayer(c, scheme, i) for i in range(c.num_hidden_layers)])
        self.norm = GemmaRMSNorm(c.hidden_size, c.rms_norm_eps, scheme.dtype)

    def forward(self, x: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
        b, s, _ = x.shape
        positions = kv.get_query_positions(b * s)
        for layer in self.layers:
            x = layer(x, positions, kv)
        return x


class GemmaForCausalLM(nn.Module):
    """web-llm's single-sequence ABI: embed, prefill, decode, create_tir_paged_kv_cache."""

    kv_kernels_used = KV_KERNELS_USED

    def __init__(self, c: GemmaConfig, scheme, target, context_window: int, prefill_chunk_size: int):
        super().__init__()
        check_expressible(c, prefill_chunk_size)
        self.config, self.scheme, self.target = c, scheme, target
        self.context_window, self.prefill_chunk_size = context_window, prefill_chunk_size
        self.model = GemmaModel(c, scheme)

    def _logits(self, x: nn.Tensor) -> nn.Tensor:
        return self.model.embed_tokens.lm_head(self.model.norm(x))

    def embed(self, input_ids: nn.Tensor):
        """Token embeddings times sqrt(hidden) (Gemma scales here, before the first layer)."""
        return self.model.embed_tokens(input_ids) * self.config.embed_scale

    def prefill(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache):
        hidden = self.model(input_embed, paged_kv_cache)

        def last_token(x):
            b, s, d = x.shape
            return te.compute((b, 1, d), lambda i, _, k: x[i, s - 1, k], name="last_token")

        hidden = op.tensor_expr_op(last_token, "last_token", args=[hidden])
        return self._logits(hidden), paged_kv_cache

    def prefill_all_logits(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache):
        """Prefill returning every position's logits (CPU verification build only)."""
        return self._logits(self.model(input_embed, paged_kv_cache)), paged_kv_cache

    def decode(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache):
        return self._logits(self.model(input_embed, paged_kv_cache)), paged_kv_cache

    def create_tir_paged_kv_cache(self, max_batch_size, max_total_seq_len, prefill_chunk_size, page_size,
                                  support_sliding_window) -> PagedKVCache:
        c = self.config
        return TIRPagedKVCache(
            attn_kind=["mha_sliding" if c.is_sliding(i) else "mha" for i in range(c.num_hidden_layers)],
            max_batch_size=max_batch_size,
            max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size,
            page_size=page_size,
            support_sliding_window=support_sliding_window,
            layer_partition=rx.ShapeExpr([0, c.num_hidden_layers]),
            num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads,
            qk_head_dim=c.head_dim,
            v_head_dim=c.head_dim,
            mla_original_qk_head_dim=0,
            mla_original_v_head_dim=0,
            rope_mode=RopeMode.NONE,  # each layer rotates q/k itself (per-layer rope bases)
            rope_scale=1,
            rope_theta=c.rope_theta,
            rope_scaling={},
            rope_ext_factors=rx.prim_value(0),
            rotary_dim=c.head_dim,
            enable_disaggregation=False,
            dtype=self.scheme.dtype,
            target=self.target,
            layer_sliding_window_size=c.sliding_window,
        )

    def get_default_spec(self):
        h, dtype = self.config.hidden_size, self.scheme.dtype
        packed = {"param_mode": "packed", "effect_mode": "none"}
        spec = {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
            "prefill": {
                "input_embed": nn.spec.Tensor([1, "seq_len", h], dtype),
                "paged_kv_cache": nn.spec.Object(object_type=PagedKVCache),
                "$": packed,
            },
            "decode": {
                "input_embed": nn.spec.Tensor([1, 1, h], dtype),
                "paged_kv_cache": nn.spec.Object(object_type=PagedKVCache),
                "$": packed,
            },
            "create_tir_paged_kv_cache": {
                "max_batch_size": int,
                "max_total_seq_len": int,
                "prefill_chunk_size": int,
                "page_size": int,
                "support_sliding_window": int,
                "$": {"param_mode": "none", "effect_mode": "none"},
            },
        }
        if "cpu" in self.target.keys:  # the verification build: all-position logits for the quality gate
            spec["prefill_all_logits"] = dict(spec["prefill"])
        return spec
