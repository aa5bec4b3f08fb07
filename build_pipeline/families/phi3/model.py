"""Phi-3 as a TVM nn.Module: the Llama model with q/k rotated in the layer (TVM; imported on demand).

TVM 0.27's cache RoPE kernel has a longrope mode, but it picks long or short factors per *forward
chunk* (chunk length > original_max_position_embeddings), which matches neither Hugging Face nor
llama.cpp; so the cache runs with RopeMode.NONE and each layer applies the config's (short) factors,
partial rotary dimension and attention factor itself.
"""

from __future__ import annotations

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode

from build_pipeline.families.llama.model import LlamaAttention, LlamaForCausalLM
from build_pipeline.families.phi3.config import Phi3Config
from build_pipeline.families.rotary import apply_rope
from build_pipeline.quantization import Scheme


class Phi3Attention(LlamaAttention):
    def __init__(self, c: Phi3Config, scheme: Scheme, layer_id: int):
        super().__init__(c, scheme, layer_id)
        self.inv_freq, self.rotary_dim, self.rope_scale = c.rope_inv_freq(), c.rotary_dim, c.rope_attention_scale

    def forward(self, x: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
        b, s, _ = x.shape
        nh, nkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        positions = kv.get_query_positions(b * s)
        q, k, v = op.split(op.reshape(self.qkv_proj(x), (b, s, nh + 2 * nkv, hd)), [nh, nh + nkv], axis=2)
        q = apply_rope(q, positions, self.inv_freq, self.rotary_dim, self.rope_scale)
        k = apply_rope(k, positions, self.inv_freq, self.rotary_dim, self.rope_scale)
        out = kv.attention_with_fused_qkv(self.layer_id, op.concat([q, k, v], dim=2), nh, sm_scale=hd**-0.5)
        return self.o_proj(op.reshape(out, (b, s, nh * hd)))


class Phi3ForCausalLM(LlamaForCausalLM):
    kv_rope_mode = RopeMode.NONE

    def __init__(self, c: Phi3Config, scheme: Scheme, target, context_window: int, prefill_chunk_size: int):
        super().__init__(c, scheme, target, context_window, prefill_chunk_size)
        for i, layer in enumerate(self.model.layers):
            layer.self_attn = Phi3Attention(c, scheme, i)  # same parameters, same place in the order


def create_model(
    config: Phi3Config, scheme: Scheme, target, context_window: int, prefill_chunk_size: int
) -> Phi3ForCausalLM:
    return Phi3ForCausalLM(config, scheme, target, context_window, prefill_chunk_size)
