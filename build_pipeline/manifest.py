"""lantern-manifest.json: everything the site needs to know about a built variant, derived from its files."""

from __future__ import annotations

import json
from pathlib import Path

from build_pipeline.tensor_cache import file_sha256

MANIFEST_FILE = "lantern-manifest.json"
SCHEMA_VERSION = 1
# The paged-KV attention kernels bind up to 10 storage buffers (the WebGPU default limit is 8).
MAX_STORAGE_BUFFERS_PER_STAGE = 10


def _dtype_bytes(dtype: str) -> int:
    return 2 if dtype == "float16" else 4


def memory_estimate(model_config, scheme, context_window: int, prefill_chunk: int, param_bytes: int) -> dict:
    """Rough GPU memory need: weights + KV cache + the largest activations of a prefill chunk."""
    c, b = model_config, _dtype_bytes(scheme.dtype)
    kv = c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * context_window * b
    qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
    act = prefill_chunk * (4 * c.hidden_size + qkv + 4 * c.intermediate_size) * b + 2 * c.vocab_size * 4
    return {"params": param_bytes, "kv_cache": kv, "activations": act, "total": param_bytes + kv + act}


def largest_buffer(model_config, scheme, context_window: int, prefill_chunk: int, tensor_index: dict) -> int:
    """The biggest single GPU buffer the model binds: a weight, one layer's KV pages, or an activation."""
    c, b = model_config, _dtype_bytes(scheme.dtype)
    biggest_param = max(r["nbytes"] for shard in tensor_index["records"] for r in shard["records"])
    kv_layer = 2 * c.num_key_value_heads * c.head_dim * context_window * b
    act = prefill_chunk * max(2 * c.intermediate_size, c.hidden_size * 4) * b
    logits = prefill_chunk * c.vocab_size * 4
    return max(biggest_param, kv_layer, act, logits)


def file_entries(variant_dir: Path, names: list[str]) -> list[dict]:
    out = []
    for name in names:
        path = variant_dir / name
        out.append({"path": name, "bytes": path.stat().st_size, "sha256": file_sha256(path)})
    return out


def build_manifest(spec, model_config, scheme, variant_dir: Path, tensor_index: dict, libraries: list[dict],
                   extra_files: list[str], server_gguf: dict | None = None) -> dict:
    """Write lantern-manifest.json for a finished variant dir; returns it.

    `libraries` are the compiled WebGPU libraries, hardware default first: "library" is the one real
    GPUs use, "software_library" (if any) the one a software adapter (SwiftShader) should use. A
    browser downloads one of them, so download_bytes counts the default only.
    """
    shard_entries = [
        {"path": s["dataPath"], "bytes": s["nbytes"], "sha256": s["sha256"]} for s in tensor_index["records"]
    ]
    other = file_entries(variant_dir, extra_files)
    files = other + shard_entries
    meta = tensor_index["metadata"]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "id": f"{spec.id}-{scheme.name}",
        "model": spec.id,
        "name": spec.name,
        "family": model_config.family,
        "license": spec.license,
        "quantization": scheme.name,
        "default": spec.default,
        "context_window": spec.context_window,
        "prefill_chunk_size": spec.prefill_chunk_size,
        "param_count": meta["ParamSize"],
        "bits_per_param": round(meta["BitsPerParam"], 3),
        "download_bytes": sum(f["bytes"] for f in files if f["path"] not in {lib["file"] for lib in libraries[1:]}),
        "required_features": ["shader-f16"] if scheme.needs_shader_f16 else [],
        "required_limits": {
            "maxStorageBuffersPerShaderStage": MAX_STORAGE_BUFFERS_PER_STAGE,
            "maxStorageBufferBindingSize": largest_buffer(
                model_config, scheme, spec.context_window, spec.prefill_chunk_size, tensor_index
            ),
        },
        "estimated_gpu_memory_bytes": memory_estimate(
            model_config, scheme, spec.context_window, spec.prefill_chunk_size, meta["ParamBytes"]
        )["total"],
        "library": libraries[0] if libraries else None,
        "software_library": libraries[1] if len(libraries) > 1 else None,
        # llama.cpp weights for the server fallback (one per model, outside `files`: browsers never fetch it).
        "server_gguf": server_gguf,
        "files": files,
    }
    manifest["required_limits"]["maxBufferSize"] = manifest["required_limits"]["maxStorageBufferBindingSize"]
    (variant_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_manifest(variant_dir: Path) -> dict:
    return json.loads((Path(variant_dir) / MANIFEST_FILE).read_text())
