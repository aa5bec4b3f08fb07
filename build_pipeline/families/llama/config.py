"""Llama-shaped config (also Qwen2/Qwen3/Mistral through its feature flags) and its RoPE frequencies."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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
    qkv_bias: bool = False  # Qwen2: a bias on the fused q/k/v projection
    qk_norm: bool = False  # Qwen3: RMSNorm over each head of q and k before RoPE
    sliding_window: int | None = None  # Mistral: each token attends to the last `sliding_window` tokens
    family: str = "llama"
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_hf(cls, cfg: dict, **overrides: Any) -> LlamaConfig:
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
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}

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


def config_from_hf(cfg: dict) -> LlamaConfig:
    return LlamaConfig.from_hf(cfg)


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
