"""Phi-3 weight map: Hugging Face already fuses q/k/v and gate/up, so every parameter has one source."""

from __future__ import annotations

from build_pipeline.families.llama import Param
from build_pipeline.families.phi3.config import Phi3Config


def weight_map(config: Phi3Config) -> list[Param]:
    params = [Param("model.embed_tokens.weight", ("model.embed_tokens.weight",), "embedding")]
    for i in range(config.num_hidden_layers):
        hf = f"model.layers.{i}"
        params += [Param(f"{hf}.{name}", (f"{hf}.{name}",), kind) for name, kind in (
            ("input_layernorm.weight", "norm"), ("self_attn.qkv_proj.weight", "linear"),
            ("self_attn.o_proj.weight", "linear"), ("post_attention_layernorm.weight", "norm"),
            ("mlp.gate_up_proj.weight", "linear"), ("mlp.down_proj.weight", "linear"))]
    params.append(Param("model.norm.weight", ("model.norm.weight",), "norm"))
    if not config.tie_word_embeddings:
        params.append(Param("lm_head.weight", ("lm_head.weight",), "linear"))
    return params
