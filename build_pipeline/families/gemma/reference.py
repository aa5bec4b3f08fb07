"""Numpy reference of Gemma 2/3: the Llama reference with Gemma's steps (the yardstick for the compiled
model and the GGUF import)."""

from __future__ import annotations

import math

import numpy as np

from build_pipeline.families.gemma.config import FULL, SLIDING, GemmaConfig
from build_pipeline.reference import ReferenceModel, rms_norm


def gemma_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return rms_norm(x, 1.0 + w, eps)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x**3)))


def soft_cap(x: np.ndarray, cap: float | None) -> np.ndarray:
    return x if cap is None else np.tanh(x / np.float32(cap)) * np.float32(cap)


class GemmaReference(ReferenceModel):
    """Embedding times sqrt(hidden), (1 + w) norms around attention and MLP, GELU-tanh, per-layer window
    and rope base, q/k norms (Gemma 3), attention and final soft-caps (Gemma 2)."""

    config: GemmaConfig

    def __init__(self, config: GemmaConfig, params: dict[str, np.ndarray]):
        self.inv_freqs = {kind: config.rope_inv_freq(kind) for kind in (SLIDING, FULL)}
        super().__init__(config, params)

    def _inv_freq(self) -> np.ndarray:
        return self.inv_freqs[FULL]

    def window(self, layer: int) -> int | None:
        return self.config.sliding_window if self.config.is_sliding(layer) else None

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        return self.p["model.embed_tokens.weight"][tokens] * np.float32(self.config.embed_scale)

    def attention(self, i: int, h: np.ndarray, positions: np.ndarray) -> np.ndarray:
        c, p, pre = self.config, self.p, f"model.layers.{i}.self_attn"
        t, nh, nkv, hd = h.shape[0], c.num_attention_heads, c.num_key_value_heads, c.head_dim
        qkv = h @ p[f"{pre}.qkv_proj.weight"].T
        q = qkv[:, : nh * hd].reshape(t, nh, hd)
        k = qkv[:, nh * hd : (nh + nkv) * hd].reshape(t, nkv, hd)
        v = qkv[:, (nh + nkv) * hd :].reshape(t, nkv, hd)
        if c.qk_norm:
            q = gemma_norm(q, p[f"{pre}.q_norm.weight"], c.rms_norm_eps)
            k = gemma_norm(k, p[f"{pre}.k_norm.weight"], c.rms_norm_eps)
        self.inv_freq = self.inv_freqs[c.layer_types[i]]
        q, k = self._rope(q, positions), self._rope(k, positions)
        attn = self.attend(i, q, k, v, positions, c.query_pre_attn_scalar**-0.5, c.attn_logit_softcapping)
        return attn @ p[f"{pre}.o_proj.weight"].T

    def mlp(self, i: int, h: np.ndarray) -> np.ndarray:
        pre = f"model.layers.{i}.mlp"
        gate, up = np.split(h @ self.p[f"{pre}.gate_up_proj.weight"].T, 2, axis=-1)
        return (gelu_tanh(gate) * up) @ self.p[f"{pre}.down_proj.weight"].T

    def block(self, i: int, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        c, p, pre = self.config, self.p, f"model.layers.{i}"

        def norm(name: str, y: np.ndarray) -> np.ndarray:
            return gemma_norm(y, p[f"{pre}.{name}.weight"], c.rms_norm_eps)

        x = x + norm("post_attention_layernorm", self.attention(i, norm("input_layernorm", x), positions))
        return x + norm("post_feedforward_layernorm", self.mlp(i, norm("pre_feedforward_layernorm", x)))

    def final_norm(self, x: np.ndarray) -> np.ndarray:
        return gemma_norm(x, self.p["model.norm.weight"], self.config.rms_norm_eps)

    def head(self) -> np.ndarray:
        return self.p["model.embed_tokens.weight"]

    def project(self, x: np.ndarray, head: np.ndarray) -> np.ndarray:
        return soft_cap(x @ head.T, self.config.final_logit_softcapping)
