"""Llama family (Llama 2/3, SmolLM, Mistral-style): config, weight-name map."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from build_pipeline.errors import BuildError


@dataclass(frozen=True)
class LlamaConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    max_position_embeddings: int
    rope_scaling: dict | None = None
    qkv_bias: bool = False
    family: str = "llama"
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_hf(cls, cfg: dict, **overrides) -> "LlamaConfig":
        try:
            heads = int(cfg["num_attention_heads"])
            hidden = int(cfg["hidden_size"])
            values = dict(
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_hidden_layers=int(cfg["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                vocab_size=int(cfg["vocab_size"]),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=float(cfg.get("rope_theta", 10000.0)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                rope_scaling=cfg.get("rope_scaling") or None,
            )
        except KeyError as exc:
            raise BuildError(
                f"config.json lacks {exc.args[0]!r}, which a {cls.__name__} needs",
                "use the model's original config.json",
            ) from None
        values.update(overrides)
        config = cls(**values)
        config.rope_inv_freq()  # reject unknown rope scaling early
        return config

    def to_dict(self) -> dict:
        """The `model_config` written to mlc-chat-config.json."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        return d

    def rope_inv_freq(self) -> np.ndarray:
        """Inverse RoPE frequencies (float64), including Llama-3 / linear scaling. One source for all users."""
        dim = self.head_dim
        inv = 1.0 / (self.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        scaling = self.rope_scaling
        if not scaling:
            return inv
        kind = scaling.get("rope_type") or scaling.get("type")
        if kind in (None, "default"):
            return inv
        if kind == "linear":
            return inv / float(scaling["factor"])
        if kind == "llama3":
            factor = float(scaling["factor"])
            low = float(scaling.get("low_freq_factor", 1.0))
            high = float(scaling.get("high_freq_factor", 4.0))
            old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
            wavelen = 2 * math.pi / inv
            low_wavelen = old_ctx / low
            high_wavelen = old_ctx / high
            smooth = (old_ctx / wavelen - low) / (high - low)
            mid = (1 - smooth) * inv / factor + smooth * inv
            return np.where(wavelen > low_wavelen, inv / factor, np.where(wavelen < high_wavelen, inv, mid))
        raise BuildError(
            f"rope scaling type {kind!r} is not supported",
            "supported rope scaling: default, linear, llama3",
        )


@dataclass(frozen=True)
class Param:
    """One tensor of the compiled model and the source tensors it is made of (concatenated on axis 0)."""

    name: str
    sources: tuple[str, ...]
    kind: str  # "embedding" | "linear" | "norm" | "bias"


def weight_map(config: LlamaConfig) -> list[Param]:
    """Compiled-model parameter names (MLC-style fused qkv / gate_up) <- Hugging Face tensor names."""
    params = [Param("model.embed_tokens.weight", ("model.embed_tokens.weight",), "embedding")]
    for i in range(config.num_hidden_layers):
        hf = f"model.layers.{i}"
        params += [
            Param(f"{hf}.input_layernorm.weight", (f"{hf}.input_layernorm.weight",), "norm"),
            Param(
                f"{hf}.self_attn.qkv_proj.weight",
                tuple(f"{hf}.self_attn.{p}_proj.weight" for p in "qkv"),
                "linear",
            ),
        ]
        if config.qkv_bias:
            params.append(
                Param(f"{hf}.self_attn.qkv_proj.bias", tuple(f"{hf}.self_attn.{p}_proj.bias" for p in "qkv"), "bias")
            )
        params += [
            Param(f"{hf}.self_attn.o_proj.weight", (f"{hf}.self_attn.o_proj.weight",), "linear"),
            Param(f"{hf}.post_attention_layernorm.weight", (f"{hf}.post_attention_layernorm.weight",), "norm"),
            Param(
                f"{hf}.mlp.gate_up_proj.weight",
                (f"{hf}.mlp.gate_proj.weight", f"{hf}.mlp.up_proj.weight"),
                "linear",
            ),
            Param(f"{hf}.mlp.down_proj.weight", (f"{hf}.mlp.down_proj.weight",), "linear"),
        ]
    params.append(Param("model.norm.weight", ("model.norm.weight",), "norm"))
    if not config.tie_word_embeddings:
        params.append(Param("lm_head.weight", ("lm_head.weight",), "linear"))
    return params


def config_from_hf(cfg: dict) -> LlamaConfig:
    return LlamaConfig.from_hf(cfg)


# ---------------------------------------------------------------------------------------------
# The nn.Module (Llama 2/3, SmolLM, Mistral-style; Qwen2 = the same with a q/k/v bias).
# TVM is imported lazily, so the rest of the pipeline (convert, list, inspect) stays light:
# `llama.LlamaForCausalLM` resolves through the module-level __getattr__ below.

def create_model(config: LlamaConfig, scheme, target, context_window: int, prefill_chunk_size: int):
    """The compiled model for `config` under `scheme`, with its KV cache kernels built for `target`."""
    return _nn_classes()["LlamaForCausalLM"](config, scheme, target, context_window, prefill_chunk_size)


def rope_scaling_for_kv_cache(config: LlamaConfig) -> tuple[float, dict]:
    """(rope_scale, rope_scaling dict) in the form TVM's paged KV cache RoPE kernel expects."""
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in (None, "default"):
        return 1.0, {}
    if kind == "linear":
        return 1.0 / float(scaling["factor"]), {}
    if kind == "llama3":
        return 1.0, {
            "rope_type": "llama3",
            "factor": float(scaling["factor"]),
            "low_freq_factor": float(scaling.get("low_freq_factor", 1.0)),
            "high_freq_factor": float(scaling.get("high_freq_factor", 4.0)),
            "original_max_position_embeddings": float(scaling.get("original_max_position_embeddings", 8192)),
        }
    config.rope_inv_freq()  # raises the BuildError for unknown kinds
    raise BuildError(f"rope scaling {kind!r} is not supported by the compiler", "use a default/linear/llama3 model")


_LAZY_CLASSES = ("LlamaAttention", "LlamaMLP", "LlamaDecoderLayer", "LlamaModel", "LlamaForCausalLM")


def __getattr__(name: str):
    if name in _LAZY_CLASSES:  # only these import TVM; any other probe fails fast
        return _nn_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NN_CLASSES: dict = {}


def _nn_classes() -> dict:
    if _NN_CLASSES:
        return _NN_CLASSES
    from tvm import relax as rx
    from tvm import te
    from tvm.relax.frontend import nn
    from tvm.relax.frontend.nn import op
    from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache

    from build_pipeline.compiler.layers import QuantEmbedding, QuantLinear

    class LlamaAttention(nn.Module):
        def __init__(self, c: LlamaConfig, scheme, layer_id: int):
            super().__init__()
            self.layer_id = layer_id
            self.num_heads, self.num_kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
            qkv_rows = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
            base = f"model.layers.{layer_id}.self_attn"
            self.qkv_proj = QuantLinear(c.hidden_size, qkv_rows, scheme, f"{base}.qkv_proj", bias=c.qkv_bias)
            self.o_proj = QuantLinear(c.num_attention_heads * c.head_dim, c.hidden_size, scheme, f"{base}.o_proj")

        def forward(self, x: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
            b, s, _ = x.shape
            qkv = op.reshape(self.qkv_proj(x), (b, s, self.num_heads + 2 * self.num_kv_heads, self.head_dim))
            out = kv.attention_with_fused_qkv(self.layer_id, qkv, self.num_heads, sm_scale=self.head_dim**-0.5)
            return self.o_proj(op.reshape(out, (b, s, self.num_heads * self.head_dim)))

    class LlamaMLP(nn.Module):
        def __init__(self, c: LlamaConfig, scheme, layer_id: int):
            super().__init__()
            self.ffn = c.intermediate_size
            base = f"model.layers.{layer_id}.mlp"
            self.gate_up_proj = QuantLinear(c.hidden_size, 2 * c.intermediate_size, scheme, f"{base}.gate_up_proj")
            self.down_proj = QuantLinear(c.intermediate_size, c.hidden_size, scheme, f"{base}.down_proj")

        def forward(self, x: nn.Tensor) -> nn.Tensor:
            gate_up = self.gate_up_proj(x)
            gate, up = op.split(gate_up, 2, axis=-1)
            return self.down_proj(op.silu(gate) * up)

    class LlamaDecoderLayer(nn.Module):
        # Attribute order = parameter order = weight_map order (tensor-cache order).
        def __init__(self, c: LlamaConfig, scheme, layer_id: int):
            super().__init__()
            self.input_layernorm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False, dtype=scheme.dtype)
            self.self_attn = LlamaAttention(c, scheme, layer_id)
            self.post_attention_layernorm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False,
                                                       dtype=scheme.dtype)
            self.mlp = LlamaMLP(c, scheme, layer_id)

        def forward(self, x: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
            x = x + self.self_attn(self.input_layernorm(x), kv)
            return x + self.mlp(self.post_attention_layernorm(x))

    class LlamaModel(nn.Module):
        def __init__(self, c: LlamaConfig, scheme):
            super().__init__()
            self.embed_tokens = QuantEmbedding(c.vocab_size, c.hidden_size, scheme)
            self.layers = nn.ModuleList([LlamaDecoderLayer(c, scheme, i) for i in range(c.num_hidden_layers)])
            self.norm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False, dtype=scheme.dtype)

        def forward(self, x: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
            for layer in self.layers:
                x = layer(x, kv)
            return x

    class LlamaForCausalLM(nn.Module):
        """web-llm's single-sequence ABI: embed, prefill, decode, create_tir_paged_kv_cache."""

        def __init__(self, c: LlamaConfig, scheme, target, context_window: int, prefill_chunk_size: int):
            super().__init__()
            self.config, self.scheme, self.target = c, scheme, target
            self.context_window, self.prefill_chunk_size = context_window, prefill_chunk_size
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

            def last_token(x):
                b, s, d = x.shape
                return te.compute((b, 1, d), lambda i, _, k: x[i, s - 1, k], name="last_token")

            hidden = op.tensor_expr_op(last_token, "last_token", args=[hidden])
            return self._logits(hidden), paged_kv_cache

        def prefill_all_logits(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache):
            """Prefill returning every position's logits: the quality gate's teacher-forced perplexity
            (CPU verification build only; web-llm never calls it)."""
            hidden = self.model(input_embed, paged_kv_cache)
            return self._logits(hidden), paged_kv_cache

        def decode(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache):
            hidden = self.model(input_embed, paged_kv_cache)
            return self._logits(hidden), paged_kv_cache

        def create_tir_paged_kv_cache(self, max_batch_size, max_total_seq_len, prefill_chunk_size, page_size,
                                      support_sliding_window) -> PagedKVCache:
            c = self.config
            rope_scale, rope_scaling = rope_scaling_for_kv_cache(c)
            return TIRPagedKVCache(
                attn_kind="mha",
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
                rope_mode=RopeMode.NORMAL,
                rope_scale=rope_scale,
                rope_theta=c.rope_theta,
                rope_scaling=rope_scaling,
                rope_ext_factors=rx.prim_value(0),
                rotary_dim=c.head_dim,
                enable_disaggregation=False,
                dtype=self.scheme.dtype,
                target=self.target,
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

    _NN_CLASSES.update(
        LlamaAttention=LlamaAttention, LlamaMLP=LlamaMLP, LlamaDecoderLayer=LlamaDecoderLayer,
        LlamaModel=LlamaModel, LlamaForCausalLM=LlamaForCausalLM,
    )
    return _NN_CLASSES
