"""Gemma 2 and 3 in a GGUF: the sandwich norms' names, RMSNorm weights stored as 1 + w, and the config
fields llama.cpp keeps in its metadata or hard-codes."""

from __future__ import annotations

from typing import Any

from build_pipeline.families.interface import GgufLayout, GgufMeta

# llama.cpp's ffn_norm is Gemma's pre-MLP norm of the sandwich.
_GEMMA2_NAMES = {
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
}
_GEMMA3_NAMES = {
    **_GEMMA2_NAMES,
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
}
# llama.cpp hard-codes Gemma 3's local-layer rope base (llama-model.cpp, LLM_ARCH_GEMMA3).
GEMMA3_LOCAL_ROPE_BASE = 10000.0


def _config(meta: GgufMeta, local_rope_base: float | None) -> dict:
    n_head = int(meta("attention.head_count"))
    head_dim = int(meta("attention.key_length", int(meta("embedding_length")) // n_head))
    rope_theta = float(meta("rope.freq_base", 10000.0))
    return {
        "head_dim": head_dim,
        # llama.cpp scales queries by head_dim**-0.5 (hidden/heads for the 27B models): it does not store
        # query_pre_attn_scalar.
        "query_pre_attn_scalar": head_dim,
        "sliding_window": int(meta("attention.sliding_window", 4096)),
        "rope_theta": rope_theta,
        "rope_local_base_freq": local_rope_base if local_rope_base is not None else rope_theta,
        "attn_logit_softcapping": meta("attn_logit_softcapping"),
        "final_logit_softcapping": meta("final_logit_softcapping"),
    }


def _gemma2_config(meta: GgufMeta, _reader: Any) -> dict:
    return _config(meta, None)


def _gemma3_config(meta: GgufMeta, _reader: Any) -> dict:
    return _config(meta, GEMMA3_LOCAL_ROPE_BASE)


GEMMA2 = GgufLayout(block_names=_GEMMA2_NAMES, norm_shift=1.0, config=_gemma2_config)
GEMMA3 = GgufLayout(block_names=_GEMMA3_NAMES, norm_shift=1.0, config=_gemma3_config)
