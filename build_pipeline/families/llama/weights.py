"""Llama weight map: compiled-model parameter names (MLC-style fused qkv / gate_up) <- HF tensor names."""

from __future__ import annotations

from build_pipeline.families.interface import Param
from build_pipeline.families.llama.config import LlamaConfig


def weight_map(config: LlamaConfig) -> list[Param]:
    """In nn.Module attribute order (= tensor-cache order); features add the bias and q/k norms."""
    c = config
    h, hd, ffn = c.hidden_size, c.head_dim, c.intermediate_size
    qkv_rows = (c.num_attention_heads + 2 * c.num_key_value_heads) * hd
    params = [Param("model.embed_tokens.weight", ("model.embed_tokens.weight",), "embedding", (c.vocab_size, h))]
    for i in range(c.num_hidden_layers):
        hf = f"model.layers.{i}"
        attn = f"{hf}.self_attn"
        params += [
            Param(f"{hf}.input_layernorm.weight", (f"{hf}.input_layernorm.weight",), "norm", (h,)),
            Param(f"{attn}.qkv_proj.weight", tuple(f"{attn}.{p}_proj.weight" for p in "qkv"), "linear", (qkv_rows, h)),
        ]
        if c.qkv_bias:
            params.append(
                Param(f"{attn}.qkv_proj.bias", tuple(f"{attn}.{p}_proj.bias" for p in "qkv"), "bias", (qkv_rows,))
            )
        if c.qk_norm:
            params += [Param(f"{attn}.{p}_norm.weight", (f"{attn}.{p}_norm.weight",), "norm", (hd,)) for p in "qk"]
        params += [
            Param(f"{attn}.o_proj.weight", (f"{attn}.o_proj.weight",), "linear", (h, c.num_attention_heads * hd)),
            Param(f"{hf}.post_attention_layernorm.weight", (f"{hf}.post_attention_layernorm.weight",), "norm", (h,)),
            Param(
                f"{hf}.mlp.gate_up_proj.weight",
                (f"{hf}.mlp.gate_proj.weight", f"{hf}.mlp.up_proj.weight"),
                "linear",
                (2 * ffn, h),
            ),
            Param(f"{hf}.mlp.down_proj.weight", (f"{hf}.mlp.down_proj.weight",), "linear", (h, ffn)),
        ]
    params.append(Param("model.norm.weight", ("model.norm.weight",), "norm", (h,)))
    if not c.tie_word_embeddings:
        params.append(Param("lm_head.weight", ("lm_head.weight",), "linear", (c.vocab_size, h)))
    return params
