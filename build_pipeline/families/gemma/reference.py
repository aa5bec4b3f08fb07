"""Numpy reference forward pass of Gemma 2/3: the yardstick for the compiled model and the GGUF import."""

from __future__ import annotations

import math

import numpy as np

from build_pipeline.families.gemma.config import FULL, SLIDING, GemmaConfig
from build_pipeline.reference import ReferenceModel, apply_rope, attention, rms_norm


def gemma_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return rms_norm(x, 1.0 + w, eps)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x ** 3)))


def soft_cap(x: np.ndarray, cap: float | None) -> np.ndarray:
    return x if cap is None else np.tanh(x / np.float32(cap)) * np.float32(cap)


class GemmaReference(ReferenceModel):
    """Greedy-decodable Gemma over dense float32 params keyed by the fused (compiled-model) names."""

    def __init__(self, config: GemmaConfig, params: dict[str, np.ndarray]):
        super().__init__(config, params)
        self.inv_freqs = {kind: config.rope_inv_freq(kind) for kind in (SLIDING, FULL)}

    def _inv_freq(self) -> np.ndarray:  # the llama base class's single frequency table is not used
        return np.zeros(0)

    def forward(self, tokens) -> np.ndarray:
        c, p = self.config, self.p
        tokens = np.asarray(tokens, dtype=np.int64)
        t = len(tokens)
        nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        positions = np.arange(self.pos, self.pos + t)
        x = p["model.embed_tokens.weight"][tokens] * np.float32(c.embed_scale)
        for i in range(c.num_hidden_layers):
            pre = f"model.layers.{i}"
            h = gemma_norm(x, p[f"{pre}.input_layernorm.weight"], c.rms_norm_eps)
            qkv = h @ p[f"{pre}.self_attn.qkv_proj.weight"].T
            q = qkv[:, : nh * hd].reshape(t, nh, hd)
            k = qkv[:, nh * hd : (nh + nkv) * hd].reshape(t, nkv, hd)
            v = qkv[:, (nh + nkv) * hd :].reshape(t, nkv, hd)
            if c.qk_norm:
                q = gemma_norm(q, p[f"{pre}.self_attn.q_norm.weight"], c.rms_norm_eps)
                k = gemma_norm(k, p[f"{pre}.self_attn.k_norm.weight"], c.rms_norm_eps)
            inv = self.inv_freqs[c.layer_types[i]]
            q, k = apply_rope(q, positions, inv, hd), apply_rope(k, positions, inv, hd)
            self.k_cache[i].append(k)
            self.v_cache[i].append(v)
            window = c.sliding_window if c.is_sliding(i) else None
            attn = attention(q, np.concatenate(self.k_cache[i]), np.concatenate(self.v_cache[i]), positions,
                             c.query_pre_attn_scalar ** -0.5, window, c.attn_logit_softcapping)
            attn = attn @ p[f"{pre}.self_attn.o_proj.weight"].T
            x = x + gemma_norm(attn, p[f"{pre}.post_attention_layernorm.weight"], c.rms_norm_eps)
            h = gemma_norm(x, p[f"{pre}.pre_feedforward_layernorm.weight"], c.rms_norm_eps)
            gate, up = np.split(h @ p[f"{pre}.mlp.gate_up_proj.weight"].T, 2, axis=-1)
            mlp = (gelu_tanh(gate) * up) @ p[f"{pre}.mlp.down_proj.weight"].T
            x = x + gemma_norm(mlp, p[f"{pre}.post_feedforward_layernorm.weight"], c.rms_norm_eps)
        x = gemma_norm(x, p["model.norm.weight"], c.rms_norm_eps)
        self.pos += t
        return soft_cap(x @ p["model.embed_tokens.weight"].T, c.final_logit_softcapping)
