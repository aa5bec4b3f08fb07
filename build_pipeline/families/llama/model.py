"""The Llama nn.Module (also Qwen2 / Qwen3 / Mistral through config features): web-llm's model ABI.

This is the heavy module (it imports TVM at the top): the registry imports it only when a library is
compiled (families.Family.create_model), so listing, converting and inspecting stay light.
"""

from __future__ import annotations

from tvm import relax as rx
from tvm import te
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache

from build_pipeline.errors import BuildError
from build_pipeline.families.interface import ModelConfig
from build_pipeline.families.llama.config import LlamaConfig, rope_scaling_for_kv_cache
from build_pipeline.nn.layers import QuantEmbedding, QuantLinear
from build_pipeline.quantization import Scheme


class LlamaAttention(nn.Module):
    def __init__(self, c: LlamaConfig, scheme: Scheme, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        qkv_rows = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
        base = f"model.layers.{layer_id}.self_attn"
        self.qkv_proj = QuantLinear(c.hidden_size, qkv_rows, scheme, f"{base}.qkv_proj", bias=c.qkv_bias)
        if c.qk_norm:  # Qwen3: per-head RMSNorm of q and k before RoPE
            self.q_norm = nn.RMSNorm(c.head_dim, -1, c.rms_norm_eps, bias=False, dtype=scheme.dtype)
            self.k_norm = nn.RMSNorm(c.head_dim, -1, c.rms_norm_eps, bias=False, dtype=scheme.dtype)
        self.qk_norm = c.qk_norm
        self.o_proj = QuantLinear(c.num_attention_heads * c.head_dim, c.hidden_size, scheme, f"{base}.o_proj")

    def forward(self, x: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
        b, s, _ = x.shape
        nh, nkv = self.num_heads, self.num_kv_heads
        qkv = op.reshape(self.qkv_proj(x), (b, s, nh + 2 * nkv, self.head_dim))
        if self.qk_norm:
            q, k, v = op.split(qkv, [nh, nh + nkv], axis=2)
            qkv = op.concat([self.q_norm(q), self.k_norm(k), v], dim=2)
        out = kv.attention_with_fused_qkv(self.layer_id, qkv, nh, sm_scale=self.head_dim**-0.5)
        return self.o_proj(op.reshape(out, (b, s, nh * self.head_dim)))


class LlamaMLP(nn.Module):
    def __init__(self, c: ModelConfig, scheme: Scheme, layer_id: int):
        super().__init__()
        base = f"model.layers.{layer_id}.mlp"
        self.gate_up_proj = QuantLinear(c.hidden_size, 2 * c.intermediate_size, scheme, f"{base}.gate_up_proj")
        self.down_proj = QuantLinear(c.intermediate_size, c.hidden_size, scheme, f"{base}.down_proj")

    def activation(self, gate: nn.Tensor) -> nn.Tensor:
        return op.silu(gate)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        gate, up = op.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(self.activation(gate) * up)


class LlamaDecoderLayer(nn.Module):
    # Attribute order = parameter order = weight_map order (tensor-cache order).
    def __init__(self, c: LlamaConfig, scheme: Scheme, layer_id: int):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False, dtype=scheme.dtype)
        self.self_attn = LlamaAttention(c, scheme, layer_id)
        self.post_attention_layernorm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False, dtype=scheme.dtype)
        self.mlp = LlamaMLP(c, scheme, layer_id)

    def forward(self, x: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, c: LlamaConfig, scheme: Scheme):
        super().__init__()
        self.embed_tokens = QuantEmbedding(c.vocab_size, c.hidden_size, scheme)
        self.layers = nn.ModuleList([LlamaDecoderLayer(c, scheme, i) for i in range(c.num_hidden_layers)])
        self.norm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False, dtype=scheme.dtype)

    def forward(self, x: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
        for layer in self.layers:
            x = layer(x, kv)
        return x


def sliding_window_of(c: LlamaConfig, context_window: int, prefill_chunk_size: int) -> int | None:
    """The KV cache's per-layer window (TVM `mha_sliding` layers), or None when it can never take effect.

    TVM's layer sliding window masks each query of a paged prefill to its own window, but attention
    within one prefill chunk is plain causal: exact only while a chunk fits in the window. web-llm's
    own sliding window (mlc-chat-config `sliding_window_size`) evicts pages per sequence instead, which
    lets early tokens of a chunk see past their window; Lantern leaves it off (-1)."""
    window = c.sliding_window
    if window is None or window >= context_window:
        return None
    if prefill_chunk_size >= window:
        # At chunk == window the last query of a chunk has an empty cached part: NaN (measured).
        raise BuildError(
            f"prefill_chunk_size {prefill_chunk_size} is not below the model's sliding window {window}: the "
            "compiled attention would let tokens of a prefill chunk see past their window",
            f"set prefill_chunk_size <= {window - 1} in the model config",
        )
    return window


def _last_token(x: te.Tensor) -> te.Tensor:
    b, s, d = x.shape
    return te.compute((b, 1, d), lambda i, _, k: x[i, s - 1, k], name="last_token")


class LlamaForCausalLM(nn.Module):
    """web-llm's single-sequence ABI: embed, prefill, decode, create_tir_paged_kv_cache."""

    # RopeMode.NONE in a subclass whose layers rotate q/k themselves (Gemma's per-layer bases, Phi-3's
    # partial longrope): the cache then only stores and attends.
    kv_rope_mode = RopeMode.NORMAL
    attention_logit_softcap: float | None = None  # see CausalLM (families/interface.py)

    def __init__(self, c: LlamaConfig, scheme: Scheme, target, context_window: int, prefill_chunk_size: int):
        super().__init__()
        self.config, self.scheme, self.target = c, scheme, target
        self.context_window, self.prefill_chunk_size = context_window, prefill_chunk_size
        self.layer_sliding_window = sliding_window_of(c, context_window, prefill_chunk_size)
        self.model = LlamaModel(c, scheme)
        if not c.tie_word_embeddings:
            self.lm_head = QuantLinear(c.hidden_size, c.vocab_size, scheme, "lm_head", out_dtype="float32")

    def _logits(self, x: nn.Tensor) -> nn.Tensor:
        x = self.model.norm(x)
        if self.config.tie_word_embeddings:
            return self.model.embed_tokens.lm_head(x)
        return self.lm_head(x)

    def embed(self, input_ids: nn.Tensor):
        return self.model.embed_tokens(input_ids)

    def prefill(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache):
        hidden = self.model(input_embed, paged_kv_cache)
        hidden = op.tensor_expr_op(_last_token, "last_token", args=[hidden])
        return self._logits(hidden), paged_kv_cache

    def prefill_all_logits(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache):
        """Prefill returning every position's logits: the quality gate's teacher-forced perplexity
        (CPU verification build only; web-llm never calls it)."""
        hidden = self.model(input_embed, paged_kv_cache)
        return self._logits(hidden), paged_kv_cache

    def decode(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache):
        hidden = self.model(input_embed, paged_kv_cache)
        return self._logits(hidden), paged_kv_cache

    def create_tir_paged_kv_cache(
        self, max_batch_size, max_total_seq_len, prefill_chunk_size, page_size, support_sliding_window
    ) -> PagedKVCache:
        c = self.config
        in_cache = self.kv_rope_mode == RopeMode.NORMAL
        rope_scale, rope_scaling = rope_scaling_for_kv_cache(c) if in_cache else (1.0, {})
        window = self.layer_sliding_window
        layers, kinds = c.num_hidden_layers, self.attn_kinds()
        if isinstance(kinds, list) and "mha" not in kinds:
            # Every layer is windowed. TVM 0.27 allocates the paged cache's q/k/v staging buffers only when
            # some layer is plain "mha" (paged_kv_cache.cc), so one never-called plain layer is declared
            # after the model's (it costs one layer of KV pages).
            layers, kinds = layers + 1, [*kinds, "mha"]
        return TIRPagedKVCache(
            attn_kind=kinds,
            max_batch_size=max_batch_size,
            max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size,
            page_size=page_size,
            support_sliding_window=support_sliding_window,
            layer_partition=rx.ShapeExpr([0, layers]),
            num_hidden_layers=layers,
            num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads,
            qk_head_dim=c.head_dim,
            v_head_dim=c.head_dim,
            mla_original_qk_head_dim=0,
            mla_original_v_head_dim=0,
            rope_mode=self.kv_rope_mode,
            rope_scale=rope_scale,
            rope_theta=c.rope_theta,
            rope_scaling=rope_scaling,
            rope_ext_factors=rx.prim_value(0),
            rotary_dim=c.head_dim,
            enable_disaggregation=False,
            dtype=self.scheme.dtype,
            target=self.target,
            layer_sliding_window_size=window or 1024,  # 1024: TVM's default, unused without sliding layers
        )

    def attn_kinds(self) -> str | list[str]:
        """The KV cache's attention kind: one for all layers, or per layer ("mha" / "mha_sliding")."""
        window = self.layer_sliding_window
        return "mha" if window is None else ["mha_sliding"] * self.config.num_hidden_layers

    def get_default_spec(self) -> dict:
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


def create_model(
    config: LlamaConfig, scheme: Scheme, target, context_window: int, prefill_chunk_size: int
) -> LlamaForCausalLM:
    """The compiled model for `config` under `scheme`, with its KV cache kernels built for `target`."""
    return LlamaForCausalLM(config, scheme, target, context_window, prefill_chunk_size)
