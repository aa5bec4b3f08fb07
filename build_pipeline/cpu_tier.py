"""The in-browser CPU tier: the model's GGUF run by llama.cpp compiled to WebAssembly (wllama) in a
browser without a usable GPU — private like the WebGPU path, slower than a real GPU, much faster than a
software WebGPU adapter.

Its weights are the very model.gguf the server fallback runs, so a CPU-tier answer and a server answer
come from the same bytes. This module states what that tier needs of a device (one source of truth: the
manifest carries it, the site serves it, the page only compares it with what the browser reports).
"""

from __future__ import annotations

ENGINE = "wllama"
ENGINE_VERSION = "2.3.7"  # npm @wllama/wllama, vendored into static/vendor/wllama by the Makefile
# wasm32 linear memory ends at 4 GiB; wllama's llama.cpp also needs room for its own heap and threads.
WASM_MEMORY_LIMIT = 4 * 1024**3
KV_BYTES_PER_VALUE = 2  # llama.cpp's default f16 KV cache
RUNTIME_OVERHEAD_BYTES = 96 * 1024**2  # compute buffers, logits, wasm runtime (measured ~60-80 MB for 135M)
# Measured (bench/cpu_tier_bench.py, 2-core machine, SmolLM2-135M): wllama decodes ~8x faster than
# WebGPU on SwiftShader, so on a software adapter the page prefers this tier.
PREFERRED_ON_SOFTWARE_ADAPTER = True


def kv_cache_bytes(model_config, context_window: int) -> int:
    """K and V for every layer at the full context window."""
    per_token = 2 * model_config.num_hidden_layers * model_config.num_key_value_heads * model_config.head_dim
    return per_token * context_window * KV_BYTES_PER_VALUE


def cpu_tier(model_config, context_window: int, server_gguf: dict | None) -> dict | None:
    """The manifest's `cpu_tier` block: what the browser downloads and how much memory it needs.

    None when the model has no GGUF (nothing for llama.cpp to run) or would not fit wasm32 memory.
    """
    if not server_gguf:
        return None
    ram = int(server_gguf["bytes"]) + kv_cache_bytes(model_config, context_window) + RUNTIME_OVERHEAD_BYTES
    if ram > WASM_MEMORY_LIMIT:
        return None
    return {
        "engine": ENGINE,
        "engine_version": ENGINE_VERSION,
        "gguf": {
            "path": server_gguf["path"],
            "bytes": int(server_gguf["bytes"]),
            "sha256": server_gguf["sha256"],
            "type": server_gguf.get("type"),
        },
        "context_window": context_window,
        "ram_bytes": ram,
        "preferred_on_software_adapter": PREFERRED_ON_SOFTWARE_ADAPTER,
    }
