"""Phi-3 in a GGUF: q/k/v and gate/up stored already fused, a partial rotary dimension, and LongRoPE's
factors as two tensors."""

from __future__ import annotations

from typing import Any

import numpy as np

from build_pipeline.families.interface import GgufLayout, GgufMeta

_NAMES = {
    "attn_qkv.weight": "self_attn.qkv_proj.weight",
    "ffn_up.weight": "mlp.gate_up_proj.weight",
}
_FACTORS = ("rope_factors_long.weight", "rope_factors_short.weight")


def _config(meta: GgufMeta, reader: Any) -> dict:
    n_head = int(meta("attention.head_count"))
    head_dim = int(meta("embedding_length")) // n_head
    out: dict = {
        "head_dim": head_dim,
        "partial_rotary_factor": int(meta("rope.dimension_count", head_dim)) / head_dim,
    }
    window = meta("attention.sliding_window")
    if window:
        out["sliding_window"] = int(window)
    original = meta("rope.scaling.original_context_length")
    factors = {
        t.name: np.asarray(t.data, dtype=np.float32).reshape(-1).tolist() for t in reader.tensors if t.name in _FACTORS
    }
    if original and factors:
        out["original_max_position_embeddings"] = int(original)
        out["rope_scaling"] = {
            "rope_type": "longrope",
            "long_factor": factors["rope_factors_long.weight"],
            "short_factor": factors["rope_factors_short.weight"],
        }
        attn_factor = meta("rope.scaling.attn_factor")
        if attn_factor is not None:
            out["rope_scaling"]["attention_factor"] = float(attn_factor)
    return out


LAYOUT = GgufLayout(block_names=_NAMES, config=_config, own_rope_scaling=True)
