"""Phi-3 / Phi-3.5 / Phi-4-mini configuration (no TVM): the Llama block with partial rotary and longrope.

Longrope scales each rotary frequency by a per-dimension factor: Hugging Face switches from the short
to the long factors once a sequence outgrows `original_max_position_embeddings`, which re-rotates every
cached key and so cannot be expressed with a KV cache. Like llama.cpp (which picks by its context
size), Lantern fixes the short factors and caps the context window at the original length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from build_pipeline.errors import BuildError
from build_pipeline.families.llama.config import LlamaConfig


@dataclass(frozen=True)
class Phi3Config(LlamaConfig):
    rotary_dim: int = 0
    rope_attention_scale: float = 1.0
    original_max_position_embeddings: int = 0

    @classmethod
    def from_phi3(cls, cfg: dict) -> Phi3Config:
        heads, hidden = int(cfg["num_attention_heads"]), int(cfg["hidden_size"])
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        rotary_dim = int(head_dim * float(cfg.get("partial_rotary_factor", 1.0)))
        scaling = cfg.get("rope_scaling") or None
        max_pos = int(cfg.get("max_position_embeddings", 4096))
        original = int(cfg.get("original_max_position_embeddings") or max_pos)
        attention_scale = 1.0
        if scaling and (scaling.get("rope_type") or scaling.get("type")) == "longrope":
            attention_scale = scaling.get("attention_factor")
            if attention_scale is None:
                factor = max_pos / original
                attention_scale = math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1 else 1.0
            if len(scaling["short_factor"]) != rotary_dim // 2:
                raise BuildError(
                    f"longrope short_factor has {len(scaling['short_factor'])} entries, "
                    f"the rotary dimension {rotary_dim} needs {rotary_dim // 2}",
                    "use the model's original config.json",
                )
            max_pos = original  # the short factors only hold up to the original length
        if cfg.get("sliding_window") and int(cfg["sliding_window"]) < max_pos - 1:
            raise BuildError(
                f"Phi-3 sliding window {cfg['sliding_window']} is shorter than the context",
                "build Phi-3.5-mini / Phi-4-mini (their window spans the whole context)",
            )
        config = cls.from_hf(
            cfg,
            family="phi3",
            head_dim=head_dim,
            rotary_dim=rotary_dim,
            rope_attention_scale=float(attention_scale),
            original_max_position_embeddings=original,
            max_position_embeddings=max_pos,
            rope_scaling=scaling,
        )
        assert isinstance(config, Phi3Config)  # from_hf builds `cls`
        return config

    def rope_inv_freq(self) -> np.ndarray:
        rot = self.rotary_dim or self.head_dim
        inv = 1.0 / (self.rope_theta ** (np.arange(0, rot, 2, dtype=np.float64) / rot))
        scaling = self.rope_scaling or {}
        kind = scaling.get("rope_type") or scaling.get("type")
        if kind in (None, "default"):
            return inv
        if kind == "longrope":
            return inv / np.asarray(scaling["short_factor"], dtype=np.float64)
        raise BuildError(f"Phi-3 rope scaling {kind!r} is not supported", "supported: default, longrope")


def config_from_hf(cfg: dict) -> Phi3Config:
    return Phi3Config.from_phi3(cfg)
