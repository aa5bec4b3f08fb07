"""Issue 19: the GGUF-native weight formats compile for WebGPU within the strictest profile's limits (the
swiftshader one: no shader-f16, <= 1500 WGSL lines per kernel), with the f16 scale bits decoded by integer
ops and bitcast<f32>, every linear a single fused kernel, and a mixed fused q/k/v as one linear per segment."""

from __future__ import annotations

import re

from build_pipeline.compiler import limits
from build_pipeline.compiler.library import compile_executable, webgpu_source, webgpu_target
from build_pipeline.compiler.module import LibrarySettings
from build_pipeline.compiler.profiles import PROFILES
from build_pipeline.families import get_family
from build_pipeline.quantization import get_scheme
from testing.tiny_model import tiny_llama_config

L = "model.layers"
# Every native format once (input sizes are multiples of 256 for the K types).
FORMATS = {
    "model.embed_tokens": "gguf_q6_k",
    f"{L}.0.self_attn.qkv_proj": "seg:gguf_q4_k*384+gguf_q6_k*128",
    f"{L}.0.self_attn.o_proj": "gguf_q5_0",
    f"{L}.0.mlp.gate_up_proj": "gguf_q5_k",
    f"{L}.0.mlp.down_proj": "gguf_q8_0",
    f"{L}.1.self_attn.qkv_proj": "gguf_q4_0",
    f"{L}.1.self_attn.o_proj": "gguf_q5_1",
    f"{L}.1.mlp.gate_up_proj": "gguf_q4_1",
    f"{L}.1.mlp.down_proj": "gguf_q6_k",
}


def test_native_formats_compile_for_webgpu_within_swiftshader_limits():
    cfg = tiny_llama_config(hidden_size=256, intermediate_size=512, head_dim=64)
    scheme = get_scheme("q4f32_asym").with_formats(FORMATS)
    prof = PROFILES["swiftshader"]
    ex, meta = compile_executable(
        get_family("llama"), cfg, scheme, LibrarySettings(256, 64, prof.name), prof, webgpu_target()
    )
    src = webgpu_source(ex)
    stats = limits.analyze(src)
    limits.check(stats, prof.limits, prof.name, allow_f16=False)  # raises on any violation
    assert "bitcast<f32>" in src
    assert {p["dtype"] for p in meta["params"]} == {"uint32", "float32"}
    kernels = limits.split_kernels(src)
    assert not [n for n in kernels if n.startswith("dequantize")]
    assert not re.search(r"var<storage[^;]*dequantize", src)  # no materialised weight
    # Few storage buffers per linear (each weight is 2-4 tensors; web-llm's default floor is 8).
    linears = [s for s in stats if "linear" in s.name or "lm_head" in s.name]
    assert linears and max(s.storage_buffers for s in linears) <= 8
