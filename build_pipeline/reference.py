"""Numpy reference forward pass for the Llama-shaped families (Llama, SmolLM, Mistral, Qwen2).

It is deliberately plain: the yardstick the compiled library is verified against, and the way the
pipeline checks that weights were imported correctly (e.g. q/k un-permuting).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from threadpoolctl import threadpool_limits


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class ReferenceModel:
    """Greedy-decodable model over dense float32 params keyed by the fused (compiled-model) names."""

    def __init__(self, config, params: Mapping[str, np.ndarray]):
        self.config = config
        # A dict is converted once; another Mapping (convert.LazyDenseParams) yields float32 weights on
        # each read and is kept as it is, so the model is never held in float32 all at once.
        self.p = ({k: np.asarray(v, dtype=np.float32) for k, v in params.items()} if isinstance(params, dict)
                  else params)
        self.inv_freq = config.rope_inv_freq().astype(np.float64)
        self.reset()

    def reset(self) -> None:
        n = self.config.num_hidden_layers
        self.k_cache: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.v_cache: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.pos = 0

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        angles = positions[:, None].astype(np.float64) * self.inv_freq[None, :]
        emb = np.concatenate([angles, angles], axis=-1)
        cos, sin = np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)
        return x * cos[:, None, :] + _rotate_half(x) * sin[:, None, :]

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
            q, k = self._rope(q, positions), self._rope(k, positions)
            self.k_cache[i].append(k)
            self.v_cache[i].append(v)
            keys = np.concatenate(self.k_cache[i])  # [T, nkv, hd]
            vals = np.concatenate(self.v_cache[i])
            total = keys.shape[0]
            group = nh // nkv
            keys = np.repeat(keys, group, axis=1)
            vals = np.repeat(vals, group, axis=1)
            scores = np.einsum("thd,shd->hts", q, keys) / math.sqrt(hd)  # a Python float keeps float32
            causal = positions[:, None] >= np.arange(total)[None, :]
            scores = np.where(causal[None], scores, -np.inf)
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            attn = np.einsum("hts,shd->thd", probs, vals).reshape(t, nh * hd)
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
