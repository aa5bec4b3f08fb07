"""Phi-3 weight map: Hugging Face already fuses q/k/v and gate/up, so every parameter has one source."""

from __future__ import annotations

from build_pipeline.families.interface import Param
from build_pipeline.families.phi3.config import Phi3Config


def weight_map(config: Phi3Config) -> list[Param]:
    """In nn.Module attribute order (= tensor-cache order): the Llama layout."""
    c = config
    h, hd, ffn = c.hidden_size, c.head_dim, c.intermediate_size
    qkv_rows = (c.num_attention_heads + 2 * c.num_key_value_heads) * hd
    params = [Param("model.embed_tokens.weight", ("model.embed_tokens.weight",), "embedding", (c.vocab_size, h))]
    for i in range(c.num_hidden_layers):
        hf = f"model.layers.{i}"
        params += [
            Param(f"{hf}.{name}", (f"{hf}.{name}",), kind, shape)
            for name, kind, shape in (
                ("input_layernorm.weight", "norm", (h,)),
                ("self_attn.qkv_proj.weight", "linear", (qkv_rows, h)),
                ("self_attn.o_proj.weight", "linear", (h, c.num_attention_heads * hd)),
                ("post_attention_layernorm.weight", "norm", (h,)),
                ("mlp.gate_up_proj.weight", "linear", (2 * ffn, h)),
                ("mlp.down_proj.weight", "linear", (h, ffn)),
            )
        ]
    params.append(Param("model.norm.weight", ("model.norm.weight",), "norm", (h,)))
    if not c.tie_word_embeddings:
        params.append(Param("lm_head.weight", ("lm_head.weight",), "linear", (c.vocab_size, h)))
    return params
