"""Gemma 2/3 weight map: compiled-model parameter names (fused qkv / gate_up) <- Hugging Face names.

Norm weights keep Hugging Face's convention (the model multiplies by 1 + w); the GGUF source undoes
llama.cpp's stored 1 + w (sources/gguf_file.py).
"""

from __future__ import annotations

from build_pipeline.families.gemma.config import GemmaConfig
from build_pipeline.families.llama import Param


def weight_map(config: GemmaConfig) -> list[Param]:
    params = [Param("model.embed_tokens.weight", ("model.embed_tokens.weight",), "embedding")]
    for i in range(config.num_hidden_layers):
        hf = f"model.layers.{i}"

        def norm(name: str) -> Param:
            return Param(f"{hf}.{name}.weight", (f"{hf}.{name}.weight",), "norm")  # noqa: B023

        params += [
            norm("input_layernorm"),
            Param(f"{hf}.self_attn.qkv_proj.weight", tuple(f"{hf}.self_attn.{p}_proj.weight" for p in "qkv"),
                  "linear"),
        ]
        if config.qk_norm:
            params += [norm("self_attn.q_norm"), norm("self_attn.k_norm")]
        params += [
            Param(f"{hf}.self_attn.o_proj.weight", (f"{hf}.self_attn.o_proj.weight",), "linear"),
            norm("post_attention_layernorm"),
            norm("pre_feedforward_layernorm"),
            Param(f"{hf}.mlp.gate_up_proj.weight", (f"{hf}.mlp.gate_proj.weight", f"{hf}.mlp.up_proj.weight"),
                  "linear"),
            Param(f"{hf}.mlp.down_proj.weight", (f"{hf}.mlp.down_proj.weight",), "linear"),
            norm("post_feedforward_layernorm"),
        ]
    params.append(Param("model.norm.weight", ("model.norm.weight",), "norm"))
    return params
