"""What a variant needs from a GPU: memory, the largest single buffer, storage buffers per stage.

One place for these numbers: lantern-manifest.json shows them to the page, and the compiled
library declares the same ones to web-llm (model_package.compiled_program).
"""

from __future__ import annotations

import math

import numpy as np

from build_pipeline.contract import WEBLLM_DEVICE_FLOOR

# The paged-KV attention kernels bind up to 10 storage buffers (the WebGPU default limit is 8), which is
# what web-llm requests of every device anyway.
MAX_STORAGE_BUFFERS_PER_STAGE = WEBLLM_DEVICE_FLOOR["maxStorageBuffersPerShaderStage"]


def _activation_bytes(scheme) -> int:
    return 2 if scheme.dtype == "float16" else 4


def param_sizes(params) -> list[int]:
    """Bytes of each parameter, from (name, shape, dtype) triples."""
    return [math.prod(shape) * np.dtype(dtype).itemsize for _, shape, dtype in params]


def memory_estimate(model_config, scheme, context_window: int, prefill_chunk: int, param_bytes: int) -> dict:
    """Rough GPU memory need: weights + KV cache + the largest activations of a prefill chunk."""
    c, b = model_config, _activation_bytes(scheme)
    kv = c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * context_window * b
    qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
    act = prefill_chunk * (4 * c.hidden_size + qkv + 4 * c.intermediate_size) * b + 2 * c.vocab_size * 4
    return {"params": param_bytes, "kv_cache": kv, "activations": act, "total": param_bytes + kv + act}


def largest_buffer(model_config, scheme, context_window: int, prefill_chunk: int, biggest_param_bytes: int) -> int:
    """The biggest single GPU buffer the model binds: a weight, one layer's KV pages, or an activation."""
    c, b = model_config, _activation_bytes(scheme)
    kv_layer = 2 * c.num_key_value_heads * c.head_dim * context_window * b
    act = prefill_chunk * max(2 * c.intermediate_size, c.hidden_size * 4) * b
    logits = c.vocab_size * 4  # prefill returns the last position's logits only
    return max(biggest_param_bytes, kv_layer, act, logits)


def needs(model_config, scheme, context_window: int, prefill_chunk: int, params) -> dict:
    """Everything above for a parameter list of (name, shape, dtype)."""
    sizes = param_sizes(params)
    return {
        "required_features": ["shader-f16"] if scheme.needs_shader_f16 else [],
        "max_storage_buffers_per_stage": MAX_STORAGE_BUFFERS_PER_STAGE,
        "max_storage_buffer_binding_size": largest_buffer(
            model_config, scheme, context_window, prefill_chunk, max(sizes)
        ),
        "estimated_memory_bytes": memory_estimate(model_config, scheme, context_window, prefill_chunk, sum(sizes))[
            "total"
        ],
    }
