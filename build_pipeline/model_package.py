"""web-llm's optional model package: `mlc-model-manifest.json` beside the weights, and the matching
`artifact` entry in the library's `_metadata`.

With both, web-llm checks before loading that the library was built for these weights (the
parameter schema id) and fits the device (features, largest buffer binding), and finds the model's
functions by role instead of by name. The roles point at the plain contract's own functions, which
already take embeddings: `prefill`/`decode` are the "embeds" pair. See docs/webllm_contract.md §4.
"""

from __future__ import annotations

import hashlib
import json

from build_pipeline.contract import CHAT_CONFIG_FILE, TENSOR_CACHE_FILE

EXECUTOR = "text_generation"
TASKS = {
    "chat.completions": {"executor": EXECUTOR, "inputs": {"text": {"processor": "tokenizer"}}, "output": "text"},
}
EXPORTS = {
    "embed_tokens": "embed",
    "create_kv_cache": "create_tir_paged_kv_cache",
    "prefill_embeds": "prefill",
    "decode_embeds": "decode",
}


def canonical_json(value) -> str:
    """The text web-llm hashes: sorted keys, no spaces (its `canonicalJson`)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _identity(value) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()


def interface_id() -> str:
    return _identity({"tasks": TASKS})


def parameter_schema_id(params) -> str:
    """Names, shapes and dtypes of the parameters (order-free): equal for library and weights."""
    return _identity(sorted([name, list(shape), dtype] for name, shape, dtype in params))


def compiled_program(params, needs: dict) -> dict:
    """`_metadata.artifact` for a library with these parameters; `needs` from gpu_needs.needs()."""
    return {
        "schema": "mlc.compiled-program",
        "schema_version": 1,
        "interface_id": interface_id(),
        "parameter_schema_id": parameter_schema_id(params),
        "programs": {EXECUTOR: {"kind": "token_generation", "exports": dict(EXPORTS)}},
        "resources": {
            "required_features": list(needs["required_features"]),
            "max_storage_buffer_binding_size": needs["max_storage_buffer_binding_size"],
            "estimated_device_memory_bytes": needs["estimated_memory_bytes"],
        },
    }


def package_manifest(params) -> dict:
    """`mlc-model-manifest.json` for weights with these parameters."""
    return {
        "schema": "mlc.model-package",
        "schema_version": 1,
        "chat_config": CHAT_CONFIG_FILE,
        "interface_id": interface_id(),
        "weights": {"manifest": TENSOR_CACHE_FILE, "parameter_schema_id": parameter_schema_id(params)},
        "tasks": TASKS,
    }


def index_params(tensor_index: dict) -> list[tuple[str, list[int], str]]:
    """(name, shape, dtype) of every parameter in a tensor-cache.json index."""
    return [(r["name"], r["shape"], r["dtype"]) for shard in tensor_index["records"] for r in shard["records"]]
