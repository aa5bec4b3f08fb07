"""Numpy reference of Phi-3: the Llama reference with partial rotary and longrope's attention factor."""

from __future__ import annotations

import numpy as np

from build_pipeline.families.phi3.config import Phi3Config
from build_pipeline.reference import ReferenceModel, _rotate_half


class Phi3Reference(ReferenceModel):
    config: Phi3Config

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rotate the first `rotary_dim` features; cos/sin times the longrope attention factor."""
        rot = self.config.rotary_dim or self.config.head_dim
        angles = positions[:, None].astype(np.float64) * self.inv_freq[None, :]
        emb = np.concatenate([angles, angles], axis=-1)
        scale = self.config.rope_attention_scale
        cos, sin = (np.cos(emb) * scale).astype(np.float32), (np.sin(emb) * scale).astype(np.float32)
        head, rest = x[..., :rot], x[..., rot:]
        return np.concatenate([head * cos[:, None, :] + _rotate_half(head) * sin[:, None, :], rest], axis=-1)
