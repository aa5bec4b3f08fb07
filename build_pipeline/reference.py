"""Numpy reference forward pass for the Llama-shaped families (Llama, SmolLM, Mistral, Qwen2).

It is deliberately plain: the yardstick the compiled library is verified against, and the way the
pipeline checks that weights were imported correctly (e.g. q/k un-permuting).
"""

from __future__ import annotations

import math

import numpy as np
from threadpoolctl import threadpool_limits


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray, rotary_dim: int,
               scale: float = 1.0) -> np.ndarray:
    """Rotate-half RoPE on the first `rotary_dim` features of [T, heads, head_dim]; cos/sin times `scale`
    (longrope's attention factor)."""
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]
    emb = np.concatenate([angles, angles], axis=-1)
    cos, sin = (np.cos(emb) * scale).astype(np.float32), (np.sin(emb) * scale).astype(np.float32)
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    rot = rot * cos[:, None, :] + _rotate_half(rot) * sin[:, None, :]
    return rot if rest.shape[-1] == 0 else np.concatenate([rot, rest], axis=-1)


def attention(q: np.ndarray, keys: np.ndarray, vals: np.ndarray, positions: np.ndarray, sm_scale: float,
              window: int | None = None, soft_cap: float | None = None) -> np.ndarray:
    """Causal GQA attention of q [t, nh, hd] over the cached keys/values [T, nkv, hd] -> [t, nh * hd].

    `window`: a query at p sees keys at p - window < j <= p (sliding-window layers); `soft_cap`:
    scores become cap * tanh(scores / cap) (Gemma 2)."""
    t, nh, hd = q.shape
    total, nkv = keys.shape[0], keys.shape[1]
    keys = np.repeat(keys, nh // nkv, axis=1)
    vals = np.repeat(vals, nh // nkv, axis=1)
    scores = np.einsum("thd,shd->hts", q, keys) * np.float32(sm_scale)
    if soft_cap is not None:
        scores = np.tanh(scores / np.float32(soft_cap)) * np.float32(soft_cap)
    distance = positions[:, None] - np.arange(total)[None, :]
    visible = distance >= 0 if window is None else (distance >= 0) & (distance < window)
    scores = np.where(visible[None], scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.einsum("hts,shd->thd", probs, vals).reshape(t, nh * hd)


class ReferenceModel:
    """Greedy-decodable model over dense float32 params keyed by the fused (compiled-model) names."""

    def __init__(self, config, params: dict[str, np.ndarray]):
        self.config = config
        self.p = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
        self.inv_freq = self._inv_freq()
        self.reset()

    def _inv_freq(self) -> np.ndarray:
        return self.config.rope_inv_freq().astype(np.float64)

    def reset(self) -> None:
        n = self.config.num_hidden_layers
        self.k_cache: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.v_cache: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.pos = 0

    def forward(self, tokens) -> np.ndarray:
        """Run `tokens` after whatever is cached; return logits [len(tokens), vocab] (float32)."""
        c, p = self.config, self.p
        tokens = np.asarray(tokens, dtype=np.int64)
        t = len(tokens)
        nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        positions = np.arange(self.pos, self.pos + t)
        x = p["model.embed_tokens.weight"][tokens]
        for i in range(c.num_hidden_layers):
            pre = f"model.layers.{i}"
            h = rms_norm(x, p[f"{pre}.input_layernorm.weight"], c.rms_norm_eps)
            qkv = h @ p[f"{pre}.self_attn.qkv_proj.weight"].T
            if f"{pre}.self_attn.qkv_proj.bias" in p:
                qkv = qkv + p[f"{pre}.self_attn.qkv_proj.bias"]
            q = qkv[:, : nh * hd].reshape(t, nh, hd)
            k = qkv[:, nh * hd : (nh + nkv) * hd].reshape(t, nkv, hd)
            v = qkv[:, (nh + nkv) * hd :].reshape(t, nkv, hd)
            rot, scale = getattr(c, "rotary_dim", hd), getattr(c, "rope_attention_scale", 1.0)
            q = apply_rope(q, positions, self.inv_freq, rot, scale)
            k = apply_rope(k, positions, self.inv_freq, rot, scale)
            self.k_cache[i].append(k)
            self.v_cache[i].append(v)
            attn = attention(q, np.concatenate(self.k_cache[i]), np.concatenate(self.v_cache[i]), positions,
                             1 / math.sqrt(hd))
            x = x + attn @ p[f"{pre}.self_attn.o_proj.weight"].T
            h = rms_norm(x, p[f"{pre}.post_attention_layernorm.weight"], c.rms_norm_eps)
            gate_up = h @ p[f"{pre}.mlp.gate_up_proj.weight"].T
            gate, up = np.split(gate_up, 2, axis=-1)
            x = x + (gate / (1 + np.exp(-gate)) * up) @ p[f"{pre}.mlp.down_proj.weight"].T
        x = rms_norm(x, p["model.norm.weight"], c.rms_norm_eps)
        head = p["lm_head.weight"] if "lm_head.weight" in p else p["model.embed_tokens.weight"]
        self.pos += t
        return x @ head.T

    def generate_greedy(self, prompt_ids, max_new_tokens: int, stop_ids=()) -> list[int]:
        """Greedy decode after a fresh reset; stops on any of `stop_ids` (not included).

        One BLAS thread: decode is a chain of small GEMVs, and OpenBLAS threads on a busy
        2-core machine spend far longer waiting for each other than computing (measured 30x).
        """
        with threadpool_limits(limits=1, user_api="blas"):
            return self._generate_greedy(prompt_ids, max_new_tokens, stop_ids)

    def _generate_greedy(self, prompt_ids, max_new_tokens: int, stop_ids) -> list[int]:
        self.reset()
        logits = self.forward(prompt_ids)[-1]
        out: list[int] = []
        for _ in range(max_new_tokens):
            tok = int(np.argmax(logits))
            if tok in stop_ids:
                break
            out.append(tok)
            logits = self.forward([tok])[-1]
        return out
