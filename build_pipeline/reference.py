"""Numpy reference forward pass for the Llama-shaped families (Llama, SmolLM, Mistral, Qwen2, Qwen3).

It is deliberately plain: the yardstick the compiled library is verified against, and the way the
pipeline checks that weights were imported correctly (e.g. q/k un-permuting). Family differences are
config features read here (q/k/v bias and q/k norms by their tensors' presence, `sliding_window` from
the config); a family with a different block overrides the per-step methods (`embed`, `attention`,
`mlp`, `block`, `logits`) in a subclass named by its `Family.reference`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

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
        self.p = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()} if isinstance(params, dict) else params
        self.inv_freq = self._inv_freq()
        self.reset()

    def _inv_freq(self) -> np.ndarray:
        return self.config.rope_inv_freq().astype(np.float64)

    def reset(self) -> None:
        n = self.config.num_hidden_layers
        self.k_cache: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.v_cache: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.pos = 0

    def window(self, layer: int) -> int | None:
        """How many most recent positions (the query's own included) a query of `layer` sees; None = all."""
        return getattr(self.config, "sliding_window", None)

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        angles = positions[:, None].astype(np.float64) * self.inv_freq[None, :]
        emb = np.concatenate([angles, angles], axis=-1)
        cos, sin = np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)
        return x * cos[:, None, :] + _rotate_half(x) * sin[:, None, :]

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        return self.p["model.embed_tokens.weight"][tokens]

    def attention(self, i: int, h: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Self-attention of layer i over the cache plus `h`'s tokens (appended to the cache)."""
        c, p, pre = self.config, self.p, f"model.layers.{i}.self_attn"
        t = h.shape[0]
        nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        qkv = h @ p[f"{pre}.qkv_proj.weight"].T
        if f"{pre}.qkv_proj.bias" in p:
            qkv = qkv + p[f"{pre}.qkv_proj.bias"]
        q = qkv[:, : nh * hd].reshape(t, nh, hd)
        k = qkv[:, nh * hd : (nh + nkv) * hd].reshape(t, nkv, hd)
        v = qkv[:, (nh + nkv) * hd :].reshape(t, nkv, hd)
        if f"{pre}.q_norm.weight" in p:  # Qwen3
            q = rms_norm(q, p[f"{pre}.q_norm.weight"], c.rms_norm_eps)
            k = rms_norm(k, p[f"{pre}.k_norm.weight"], c.rms_norm_eps)
        q, k = self._rope(q, positions), self._rope(k, positions)
        return self.attend(i, q, k, v, positions, 1 / math.sqrt(hd)) @ p[f"{pre}.o_proj.weight"].T

    def attend(
        self,
        i: int,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        positions: np.ndarray,
        sm_scale: float,
        soft_cap: float | None = None,
    ) -> np.ndarray:
        """Append k/v to layer i's cache; causal GQA attention of q over it (within `window(i)`) -> [t, nh*hd].

        `soft_cap`: scores become cap * tanh(scores / cap) before the mask (Gemma 2)."""
        t, nh, hd = q.shape
        self.k_cache[i].append(k)
        self.v_cache[i].append(v)
        group = nh // k.shape[1]
        keys = np.repeat(np.concatenate(self.k_cache[i]), group, axis=1)  # [T, nh, hd]
        vals = np.repeat(np.concatenate(self.v_cache[i]), group, axis=1)
        scores = np.einsum("thd,shd->hts", q, keys) * np.float32(sm_scale)
        if soft_cap is not None:
            scores = np.tanh(scores / np.float32(soft_cap)) * np.float32(soft_cap)
        key_pos = np.arange(keys.shape[0])[None, :]
        visible = positions[:, None] >= key_pos
        window = self.window(i)
        if window is not None:
            visible &= positions[:, None] - key_pos < window
        scores = np.where(visible[None], scores, -np.inf)
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        return np.einsum("hts,shd->thd", probs, vals).reshape(t, nh * hd)

    def mlp(self, i: int, h: np.ndarray) -> np.ndarray:
        pre = f"model.layers.{i}.mlp"
        gate, up = np.split(h @ self.p[f"{pre}.gate_up_proj.weight"].T, 2, axis=-1)
        return (gate / (1 + np.exp(-gate)) * up) @ self.p[f"{pre}.down_proj.weight"].T

    def block(self, i: int, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        c, p, pre = self.config, self.p, f"model.layers.{i}"
        x = x + self.attention(i, rms_norm(x, p[f"{pre}.input_layernorm.weight"], c.rms_norm_eps), positions)
        return x + self.mlp(i, rms_norm(x, p[f"{pre}.post_attention_layernorm.weight"], c.rms_norm_eps))

    def final_norm(self, x: np.ndarray) -> np.ndarray:
        return rms_norm(x, self.p["model.norm.weight"], self.config.rms_norm_eps)

    def head(self) -> np.ndarray:
        """The output projection [vocab, hidden]: lm_head, or the tied embedding."""
        return self.p["lm_head.weight"] if "lm_head.weight" in self.p else self.p["model.embed_tokens.weight"]

    def project(self, x: np.ndarray, head: np.ndarray) -> np.ndarray:
        """Logits of final-normed hidden states."""
        return x @ head.T

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.project(self.final_norm(x), self.head())

    def logit_blocks(self, x: np.ndarray, rows: int) -> Iterator[np.ndarray]:
        """logits(x) `rows` positions at a time, the head read once: a window's logits over a 151,936-token
        vocabulary are 311 MB, more than the head itself (peak build memory in the quality stage)."""
        x, head = self.final_norm(x), self.head()
        for i in range(0, len(x), rows):
            yield self.project(x[i : i + rows], head)

    def hidden(self, tokens) -> np.ndarray:
        """Run `tokens` after whatever is cached; return the last layer's hidden states [len(tokens), hidden]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        positions = np.arange(self.pos, self.pos + len(tokens))
        x = self.embed(tokens)
        for i in range(self.config.num_hidden_layers):
            x = self.block(i, x, positions)
        self.pos += len(tokens)
        return x

    def forward(self, tokens) -> np.ndarray:
        """Run `tokens` after whatever is cached; return logits [len(tokens), vocab] (float32)."""
        return self.logits(self.hidden(tokens))

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
