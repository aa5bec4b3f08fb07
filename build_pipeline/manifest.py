"""lantern-manifest.json: everything the site needs to know about a built variant, derived from its files.

The manifest's shape (and the one reader, load_manifest) is build_pipeline/contract.py's Manifest.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

from build_pipeline import gpu_needs
from build_pipeline.contract import (
    MANIFEST_FILE,
    PACKAGE_MANIFEST_FILE,
    SCHEMA_VERSION,
    VERIFY_FILE,
    FileEntry,
    LibraryEntry,
    Manifest,
    ManifestError,
    download_bytes,
    files_for,
    load_manifest,
    parse_manifest,
)
from build_pipeline.cpu_tier import cpu_tier
from build_pipeline.errors import BuildError
from build_pipeline.model_package import index_params
from build_pipeline.probe import probe_from_report
from build_pipeline.tensor_cache import file_sha256


def file_entries(variant_dir: Path, names: list[str]) -> list[FileEntry]:
    out: list[FileEntry] = []
    for name in names:
        path = variant_dir / name
        out.append({"path": name, "bytes": path.stat().st_size, "sha256": file_sha256(path)})
    return out


def build_manifest(
    spec,
    model_config,
    scheme,
    variant_dir: Path,
    tensor_index: dict,
    libraries: list[dict],
    extra_files: list[str],
    server_gguf: dict | None = None,
    formats: dict | None = None,
    quality: dict | None = None,
) -> Manifest:
    """Write lantern-manifest.json for a finished variant dir; returns it.

    `libraries` are the compiled WebGPU libraries, hardware default first: "library" is the one real
    GPUs use, "software_library" (if any) the one a software adapter (SwiftShader) should use. A
    browser downloads one of them, so download_bytes counts the default only (Manifest.files_for).
    """
    shard_entries: list[FileEntry] = [
        {"path": s["dataPath"], "bytes": s["nbytes"], "sha256": s["sha256"]} for s in tensor_index["records"]
    ]
    other = file_entries(variant_dir, extra_files)
    files = other + shard_entries
    meta = tensor_index["metadata"]
    needs = gpu_needs.needs(
        model_config, scheme, spec.context_window, spec.prefill_chunk_size, index_params(tensor_index)
    )
    # The compiler's library reports; parse_manifest below checks them against contract.LibraryEntry.
    library = typing.cast(LibraryEntry, libraries[0]) if libraries else None
    software_library = typing.cast(LibraryEntry, libraries[1]) if len(libraries) > 1 else None
    fields = {
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
        # How each linear/embedding is stored (weight_formats.py) and, for lossless GGUF imports, from what.
        "weight_formats": format_summary(formats or {}),
        # Perplexity vs the unquantized build (quality.py); None when the library was not compiled.
        "quality": quality,
        "download_bytes": download_bytes(files_for("hardware", files, library, software_library)),
        "required_features": needs["required_features"],
        "required_limits": {
            "maxStorageBuffersPerShaderStage": needs["max_storage_buffers_per_stage"],
            "maxStorageBufferBindingSize": needs["max_storage_buffer_binding_size"],
            "maxBufferSize": needs["max_storage_buffer_binding_size"],
        },
        "estimated_gpu_memory_bytes": needs["estimated_memory_bytes"],
        # The per-device answer check (probe.py): the verified CPU build's greedy tokens for a short fixed
        # prompt, which the page compares with the GPU's on the first load of this variant on an adapter.
        "probe": probe_from_report(_verify_report(variant_dir) if libraries else None, variant_dir),
        # web-llm's model package (checks library vs weights vs device before loading), when compiled.
        "package_manifest": PACKAGE_MANIFEST_FILE if PACKAGE_MANIFEST_FILE in extra_files else None,
        "library": library,
        "software_library": software_library,
        # llama.cpp weights for the server fallback (one per model, outside `files`: a WebGPU browser never
        # fetches it) ...
        "server_gguf": {k: v for k, v in server_gguf.items() if k != "cpu_parts"} if server_gguf else None,
        # ... and for the in-browser CPU tier (wllama), with what that needs of the device.
        "cpu_tier": cpu_tier(model_config, spec.context_window, server_gguf),
        "files": files,
    }
    manifest = parse_manifest(fields)  # what is written must read back: the contract checks it here
    (variant_dir / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=1))
    return manifest


def _verify_report(variant_dir: Path) -> dict | None:
    path = Path(variant_dir) / VERIFY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def format_summary(formats: dict) -> dict:
    """{format name: {"weights": n, "sources": [GGUF types]}} over {base: {format, source_type}}."""
    out: dict[str, dict] = {}
    for info in formats.values():
        entry = out.setdefault(info["format"], {"weights": 0, "sources": []})
        entry["weights"] += 1
        for src in (info.get("source_type") or "").split("+"):
            if src and src not in entry["sources"]:
                entry["sources"].append(src)
    return out


def read_manifest(variant_dir: Path) -> Manifest:
    """The variant's typed manifest; a malformed one is a BuildError saying to rebuild it."""
    try:
        return load_manifest(variant_dir)
    except ManifestError as exc:
        raise BuildError(
            f"{Path(variant_dir) / MANIFEST_FILE} is not a valid Lantern manifest ({exc})",
            "rebuild this variant (python -m build_pipeline build <model config>)",
        ) from None
