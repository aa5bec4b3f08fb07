"""Gemma 2/3 weight map: compiled-model parameter names (fused qkv / gate_up) <- Hugging Face names.

Norm weights keep Hugging Face's convention (the model multiplies by 1 + w); the GGUF source undoes
llama.cpp's stored 1 + w (sources/gguf_file.py).
"""

from __future__ import annotations

from build_pipeline.families.gemma.config import GemmaConfig
from build_pipeline.families.interface import Param


def weight_map(config: GemmaConfig) -> list[Param]:
    """In nn.Module attribute order (= tensor-cache order)."""
    c = config
    h, hd, ffn = c.hidden_size, c.head_dim, c.intermediate_size
    qkv_rows = (c.num_attention_heads + 2 * c.num_key_value_heads) * hd
    params = [Param("model.embed_tokens.weight", ("model.embed_tokens.weight",), "embedding", (c.vocab_size, h))]
    for i in range(c.num_hidden_layers):
        hf, attn = f"model.layers.{i}", f"model.layers.{i}.self_attn"

        def norm(name: str, size: int = h) -> Param:
            return Param(f"{name}.weight", (f"{name}.weight",), "norm", (size,))

        params += [
            norm(f"{hf}.input_layernorm"),
            Param(f"{attn}.qkv_proj.weight", tuple(f"{attn}.{p}_proj.weight" for p in "qkv"), "linear", (qkv_rows, h)),
        ]
        if c.qk_norm:
            params += [norm(f"{attn}.q_norm", hd), norm(f"{attn}.k_norm", hd)]
        params += [
            Param(f"{attn}.o_proj.weight", (f"{attn}.o_proj.weight",), "linear", (h, c.num_attention_heads * hd)),
            norm(f"{hf}.post_attention_layernorm"),
            norm(f"{hf}.pre_feedforward_layernorm"),
            Param(
                f"{hf}.mlp.gate_up_proj.weight",
                (f"{hf}.mlp.gate_proj.weight", f"{hf}.mlp.up_proj.weight"),
                "linear",
                (2 * ffn, h),
            ),
            Param(f"{hf}.mlp.down_proj.weight", (f"{hf}.mlp.down_proj.weight",), "linear", (h, ffn)),
            norm(f"{hf}.post_feedforward_layernorm"),
        ]
    params.append(norm("model.norm"))
    return params
