"""Gemma 2 / Gemma 3 configuration (no TVM): what differs from Llama, read from a Hugging Face config.json.

Gemma scales the embedding by sqrt(hidden), normalises with (1 + w), wraps attention and the MLP in
pre- and post-norms, uses GELU-tanh, scales queries by query_pre_attn_scalar**-0.5 and alternates
sliding-window ("local") and global layers. Gemma 2 soft-caps attention and final logits; Gemma 3
normalises q and k per head and gives local and global layers their own rope bases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from build_pipeline.errors import BuildError

SLIDING = "sliding_attention"
FULL = "full_attention"
# Every n-th layer is global when config.json has no `layer_types` (HF's sliding_window_pattern).
DEFAULT_PATTERN = {"gemma2": 2, "gemma3": 6}


@dataclass(frozen=True)
class GemmaConfig:
    family: str  # "gemma2" | "gemma3"
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float  # global layers
    rope_local_base_freq: float  # sliding-window layers
    sliding_window: int
    layer_types: tuple[str, ...]
    query_pre_attn_scalar: float
    max_position_embeddings: int
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    qk_norm: bool = False
    rope_scaling: dict | None = None  # global layers only (Gemma 3 4B+: linear, factor 8)
    tie_word_embeddings: bool = True
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_hf(cls, cfg: dict, family: str) -> GemmaConfig:
        try:
            heads = int(cfg["num_attention_heads"])
            hidden = int(cfg["hidden_size"])
            layers = int(cfg["num_hidden_layers"])
            head_dim = int(cfg.get("head_dim") or hidden // heads)
            types = cfg.get("layer_types")
            if not types:
                pattern = int(cfg.get("sliding_window_pattern") or DEFAULT_PATTERN[family])
                types = [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(layers)]
            rope_theta = float(cfg.get("rope_theta", 10000.0))
            config = cls(
                family=family,
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=head_dim,
                vocab_size=int(cfg["vocab_size"]),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=rope_theta,
                rope_local_base_freq=float(cfg.get("rope_local_base_freq", rope_theta)),
                sliding_window=int(cfg.get("sliding_window") or 4096),
                layer_types=tuple(types),
                query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar") or head_dim),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 8192)),
                attn_logit_softcapping=_optional_float(cfg.get("attn_logit_softcapping")),
                final_logit_softcapping=_optional_float(cfg.get("final_logit_softcapping")),
                qk_norm=family == "gemma3",
                rope_scaling=cfg.get("rope_scaling") or None,
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            )
        except KeyError as exc:
            raise BuildError(
                f"config.json lacks {exc.args[0]!r}, which a {family} model needs",
                "use the model's original config.json",
            ) from None
        config.validate()
        return config

    def validate(self) -> None:
        if len(self.layer_types) != self.num_hidden_layers or set(self.layer_types) - {SLIDING, FULL}:
            raise BuildError(
                f"layer_types {list(self.layer_types)} do not describe {self.num_hidden_layers} "
                f"layers of {SLIDING!r}/{FULL!r}",
                "use the model's original config.json",
            )
        if not self.tie_word_embeddings:
            raise BuildError(
                "a Gemma model with a separate lm_head is not supported",
                "use an original Gemma checkpoint (they tie the output to the embedding)",
            )
        self.rope_inv_freq(FULL)  # rejects unknown rope scaling

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types[layer] == SLIDING

    def rope_inv_freq(self, layer_type: str = FULL) -> np.ndarray:
        """Inverse RoPE frequencies (float64) of a local or global layer (default: global): one source for all
        users."""
        theta = self.rope_local_base_freq if layer_type == SLIDING else self.rope_theta
        inv = 1.0 / (theta ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim))
        if layer_type == SLIDING or not self.rope_scaling:
            return inv
        kind = self.rope_scaling.get("rope_type") or self.rope_scaling.get("type")
        if kind in (None, "default"):
            return inv
        if kind == "linear":
            return inv / float(self.rope_scaling["factor"])
        raise BuildError(f"Gemma rope scaling {kind!r} is not supported", "supported: default, linear")

    @property
    def embed_scale(self) -> float:
        """sqrt(hidden) rounded to float32, as both Hugging Face and llama.cpp compute it."""
        return float(np.float32(math.sqrt(self.hidden_size)))

    def to_dict(self) -> dict:
        """The `model_config` written to mlc-chat-config.json."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        d["layer_types"] = list(self.layer_types)
        return d


def _optional_float(value) -> float | None:
    return None if value in (None, 0, 0.0) else float(value)


def config_from_hf(cfg: dict) -> GemmaConfig:
    arch = (cfg.get("architectures") or [""])[0]
    family = "gemma2" if arch.startswith("Gemma2") else "gemma3"
    return GemmaConfig.from_hf(cfg, family)
