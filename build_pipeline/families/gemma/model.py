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
Gemma 2's attention-logit soft-cap has no step in the cache's attention kernels (mlc-llm silently drops
it): the model declares it (attention_logit_softcap) and the compiler rewrites the kernels to apply it
(compiler/attention_softcap.py). Its final-logit soft-cap is applied here, after the lm_head.
"""

from __future__ import annotations

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode

from build_pipeline.errors import BuildError
from build_pipeline.families.gemma.config import GemmaConfig
from build_pipeline.families.llama.model import LlamaForCausalLM, LlamaMLP
from build_pipeline.families.rotary import apply_rope
from build_pipeline.nn.layers import QuantEmbedding, QuantLinear
from build_pipeline.quantization import Scheme


def check_expressible(c: GemmaConfig, prefill_chunk_size: int) -> None:
    """BuildError for what web-llm's library (TVM 0.27 paged KV cache kernels) cannot compute."""
    if any(c.is_sliding(i) for i in range(c.num_hidden_layers)) and prefill_chunk_size >= c.sliding_window:
        raise BuildError(
            f"prefill_chunk_size {prefill_chunk_size} is not below {c.family}'s sliding window "
            f"{c.sliding_window}: TVM 0.27's per-layer sliding-window attention does not window tokens "
            "within one prefill chunk",
            f"set prefill_chunk_size to at most {c.sliding_window - 1} in the model config",
        )


class GemmaRMSNorm(nn.Module):
    """RMSNorm scaled by (1 + weight): the parameter keeps Hugging Face's value."""

    def __init__(self, dim: int, eps: float, dtype: str):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter((dim,), dtype)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return op.rms_norm(x, self.weight + 1.0, axes=[-1], epsilon=self.eps)


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
        out = kv.attention_with_fused_qkv(
            self.layer_id, op.concat([q, k, v], dim=2), nh, sm_scale=self.config.query_pre_attn_scalar**-0.5
        )
        return self.o_proj(op.reshape(out, (b, s, nh * hd)))


class GemmaMLP(LlamaMLP):
    """Llama's gated MLP with GELU-tanh instead of SiLU."""

    def activation(self, gate: nn.Tensor) -> nn.Tensor:
        return op.gelu(gate, approximate="tanh")


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


class GemmaForCausalLM(LlamaForCausalLM):
    """web-llm's single-sequence ABI (Llama's prefill/decode/spec), with Gemma's model, embedding scale
    and per-layer KV cache kinds."""

    kv_rope_mode = RopeMode.NONE  # each layer rotates q/k itself (per-layer rope bases)
    # A Gemma config, not a LlamaConfig: only Llama's ABI methods (prefill, decode, spec, cache) are shared.
    config: GemmaConfig  # type: ignore[assignment]

    def __init__(self, c: GemmaConfig, scheme: Scheme, target, context_window: int, prefill_chunk_size: int):
        nn.Module.__init__(self)
        check_expressible(c, prefill_chunk_size)
        self.config, self.scheme, self.target = c, scheme, target
        self.context_window, self.prefill_chunk_size = context_window, prefill_chunk_size
        sliding = any(c.is_sliding(i) for i in range(c.num_hidden_layers))
        self.layer_sliding_window = c.sliding_window if sliding else None
        self.attention_logit_softcap = c.attn_logit_softcapping
        self.model = GemmaModel(c, scheme)

    def _logits(self, x: nn.Tensor) -> nn.Tensor:
        logits = self.model.embed_tokens.lm_head(self.model.norm(x))
        cap = self.config.final_logit_softcapping
        return logits if cap is None else op.tanh(logits / cap) * cap

    def embed(self, input_ids: nn.Tensor):
        """Token embeddings times sqrt(hidden) (Gemma scales here, before the first layer)."""
        return self.model.embed_tokens(input_ids) * self.config.embed_scale

    def attn_kinds(self) -> list[str]:
        c = self.config
        return ["mha_sliding" if c.is_sliding(i) else "mha" for i in range(c.num_hidden_layers)]


def create_model(
    config: GemmaConfig, scheme: Scheme, target, context_window: int, prefill_chunk_size: int
) -> GemmaForCausalLM:
    return GemmaForCausalLM(config, scheme, target, context_window, prefill_chunk_size)
