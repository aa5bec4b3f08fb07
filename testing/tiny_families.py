"""Tiny random Gemma 2, Gemma 3 and Phi-3 models written as llama.cpp GGUFs, for llama.cpp parity tests.

Sizes are chosen so a prompt of ~100 tokens crosses the prefill chunk (16) and the sliding window (24),
and Gemma 3 has a global layer (every 6th). The chunk is below the window: TVM's per-layer sliding
window needs that (families/gemma/model.py). Weights are seeded; the tokenizer is tiny_model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from testing.tiny_model import CHAT_TEMPLATE, MERGES, add_shape_metadata, vocab

FAMILIES = ("gemma2", "gemma3", "phi3")
SLIDING_WINDOW = 24
# Phi-3's chat specials (llama.cpp treats <|end|> as end of turn).
PHI3_SPECIALS = ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
PREFILL_CHUNK = 16


def tokens(family: str) -> list[str]:
    return vocab() + (PHI3_SPECIALS if family == "phi3" else [])


def hf_config(family: str, **extra) -> dict:
    return {**_hf_config(family), **extra}


def _hf_config(family: str) -> dict:
    base = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": len(tokens(family)),
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 4096,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if family == "gemma2":
        return {
            **base,
            "architectures": ["Gemma2ForCausalLM"],
            "num_hidden_layers": 4,
            "rope_theta": 10000.0,
            "sliding_window": SLIDING_WINDOW,
            "query_pre_attn_scalar": 16,
            "attn_logit_softcapping": 2.0,
            "final_logit_softcapping": 5.0,
            "tie_word_embeddings": True,
        }
    if family == "gemma3":
        return {
            **base,
            "architectures": ["Gemma3ForCausalLM"],
            "num_hidden_layers": 6,
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "sliding_window": SLIDING_WINDOW,
            "sliding_window_pattern": 6,
            "query_pre_attn_scalar": 16,
            "tie_word_embeddings": True,
        }
    if family == "phi3":  # Phi-4-mini-like: partial rotary (3/4), longrope, separate output matrix
        rot = 12
        rng = np.random.default_rng(7)
        return {
            **base,
            "architectures": ["Phi3ForCausalLM"],
            "num_hidden_layers": 2,
            "rope_theta": 10000.0,
            "partial_rotary_factor": rot / 16,
            "max_position_embeddings": 16384,
            "original_max_position_embeddings": 4096,
            "tie_word_embeddings": False,
            "rope_scaling": {
                "rope_type": "longrope",
                "short_factor": (1 + rng.random(rot // 2) * 3).round(3).tolist(),
                "long_factor": (4 + rng.random(rot // 2) * 20).round(3).tolist(),
            },
        }
    raise ValueError(family)


def weights(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """HF-named float32 weights (Gemma norms in HF's w convention: the model multiplies by 1 + w)."""
    rng = np.random.default_rng(seed)
    arch = cfg["architectures"][0]
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd, nh, nkv = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    gemma = arch.startswith("Gemma")

    def mat(rows, cols, std):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def norm(n):
        return ((0.0 if gemma else 1.0) + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(v, h, 1.0 if not gemma else 0.15)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        w[f"{p}.input_layernorm.weight"] = norm(h)
        q, k, vv = mat(nh * hd, h, 0.2), mat(nkv * hd, h, 0.2), mat(nkv * hd, h, 0.2)
        if arch == "Phi3ForCausalLM":
            w[f"{p}.self_attn.qkv_proj.weight"] = np.concatenate([q, k, vv])
        else:
            w[f"{p}.self_attn.q_proj.weight"], w[f"{p}.self_attn.k_proj.weight"] = q, k
            w[f"{p}.self_attn.v_proj.weight"] = vv
        if arch == "Gemma3ForCausalLM":
            w[f"{p}.self_attn.q_norm.weight"] = norm(hd)
            w[f"{p}.self_attn.k_norm.weight"] = norm(hd)
        w[f"{p}.self_attn.o_proj.weight"] = mat(h, nh * hd, 0.2)
        w[f"{p}.post_attention_layernorm.weight"] = norm(h)
        if gemma:
            w[f"{p}.pre_feedforward_layernorm.weight"] = norm(h)
        gate, up = mat(f, h, 0.2), mat(f, h, 0.2)
        if arch == "Phi3ForCausalLM":
            w[f"{p}.mlp.gate_up_proj.weight"] = np.concatenate([gate, up])
        else:
            w[f"{p}.mlp.gate_proj.weight"], w[f"{p}.mlp.up_proj.weight"] = gate, up
        w[f"{p}.mlp.down_proj.weight"] = mat(h, f, 0.2)
        if gemma:
            w[f"{p}.post_feedforward_layernorm.weight"] = norm(h)
    w["model.norm.weight"] = norm(h)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(v, h, 0.5)
    return w


_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}


def _gguf_name(hf: str, gemma: bool) -> str:
    if hf in _GLOBAL:
        return _GLOBAL[hf]
    _, _, i, rest = hf.split(".", 3)
    if rest == "post_attention_layernorm.weight":
        name = "post_attention_norm.weight" if gemma else "ffn_norm.weight"
    elif rest == "pre_feedforward_layernorm.weight":
        name = "ffn_norm.weight"
    else:
        name = _BLOCK[rest]
    return f"blk.{i}.{name}"


def write_gguf(path: Path, family: str, seed: int = 0, **extra) -> Path:
    """The model as llama.cpp's converter writes it (Gemma norms stored as 1 + w, no q/k permutation);
    `extra` config.json keys override the defaults."""
    import gguf

    cfg = hf_config(family, **extra)
    gemma = family.startswith("gemma")
    writer = gguf.GGUFWriter(str(path), family)
    # Not "tiny-phi3": llama.cpp then sets attributes on Phi-3's own "</s>"/"<unk>" tokens by text.
    add_shape_metadata(writer, cfg, f"tiny-random-{family[:-1]}")
    if gemma:
        writer.add_key_length(cfg["head_dim"])
        writer.add_value_length(cfg["head_dim"])
        writer.add_sliding_window(cfg["sliding_window"])
    if family == "gemma2":
        writer.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    if family == "phi3":
        rot = int(cfg["head_dim"] * cfg["partial_rotary_factor"])
        writer.add_rope_dimension_count(rot)
        writer.add_rope_scaling_orig_ctx_len(cfg["original_max_position_embeddings"])
        scale = cfg["max_position_embeddings"] / cfg["original_max_position_embeddings"]
        writer.add_rope_scaling_attn_factors(float(np.sqrt(1 + np.log(scale) / np.log(4096))))
        writer.add_tensor("rope_factors_long.weight", np.asarray(cfg["rope_scaling"]["long_factor"], np.float32))
        writer.add_tensor("rope_factors_short.weight", np.asarray(cfg["rope_scaling"]["short_factor"], np.float32))
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    toks = tokens(family)
    writer.add_token_list(toks)
    writer.add_token_types([3 if t.startswith("<|") else 1 for t in toks])
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    if family == "phi3":
        writer.add_eot_token_id(toks.index("<|end|>"))
        writer.add_pad_token_id(0)
    for name, arr in weights(cfg, seed).items():
        if gemma and name.endswith("norm.weight"):
            arr = arr + np.float32(1.0)
        writer.add_tensor(_gguf_name(name, gemma), arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
