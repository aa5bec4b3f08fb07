"""Build one model config: the pipeline's stages, top to bottom (docs/architecture.md).

source -> quantize -> shards -> compile -> verify -> quality -> manifest. Each stage is a module in
build_pipeline/stages/ (the manifest: manifest.py). Every variant is written to a staged dir that is
renamed into place only when all of its stages passed (atomic.py), so a failure publishes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from build_pipeline.atomic import ensure_writable_dir, staged_dir
from build_pipeline.contract import MANIFEST_FILE, PACKAGE_MANIFEST_FILE
from build_pipeline.gguf_export import server_gguf_path, staged_server_gguf
from build_pipeline.manifest import build_manifest
from build_pipeline.model_config import ModelSpec
from build_pipeline.model_package import index_params, package_manifest
from build_pipeline.quantization import get_scheme
from build_pipeline.stage_log import stage
from build_pipeline.stages.compile import compile_libraries
from build_pipeline.stages.quality import gate_variant
from build_pipeline.stages.quantize import quantized_tensors
from build_pipeline.stages.shards import write_package_files, write_shards
from build_pipeline.stages.source import LoadedModel, load_model
from build_pipeline.stages.verify import verify_libraries


def build_variant(
    model: LoadedModel,
    quantization: str,
    out_root: Path,
    compile_library: bool = True,
    server_gguf: dict | None = None,
    profile: str | None = None,
) -> Path:
    """Build one variant into out_root/<id>/<quantization>, atomically; returns that directory."""
    scheme = get_scheme(quantization)
    final = out_root / model.spec.id / scheme.name
    with staged_dir(final) as tmp:
        # quantize -> shards: the quantized tensors stream into the shard writer, filling `formats`
        formats: dict[str, dict] = {}
        with stage("quantize+shards"):
            index = write_shards(model, scheme, quantized_tensors(model, scheme, formats), formats, tmp)
        scheme = scheme.with_formats({base: f["format"] for base, f in formats.items()})
        files = write_package_files(model, scheme, tmp)
        libraries: list[dict] = []
        quality = None
        if compile_library:
            with stage("compile"):
                libraries = compile_libraries(model, scheme, tmp, profile)
            (tmp / PACKAGE_MANIFEST_FILE).write_text(json.dumps(package_manifest(index_params(index)), indent=1))
            files += [PACKAGE_MANIFEST_FILE, *(lib["file"] for lib in libraries)]
            with stage("verify"):
                report = verify_libraries(model, scheme, tmp, libraries, profile)
            with stage("quality"):
                quality = gate_variant(model, scheme, tmp, report, profile)
        build_manifest(model.spec, model.config, scheme, tmp, index, libraries, files, server_gguf, formats, quality)
    return final


def is_built(out_root: Path, model_id: str, quantization: str) -> bool:
    return (out_root / model_id / quantization / MANIFEST_FILE).exists()


def build(
    spec: ModelSpec,
    out_root: Path,
    quantizations=None,
    compile_library: bool = True,
    if_missing: bool = False,
    profile: str | None = None,
) -> list[Path]:
    """Build the requested variants (default: all in the config); `if_missing` skips finished ones."""
    quants = list(quantizations or spec.quantizations)
    for q in quants:
        get_scheme(q)
    ensure_writable_dir(out_root)
    if if_missing:
        quants = [q for q in quants if not is_built(out_root, spec.id, q)]
        if not quants and server_gguf_path(out_root / spec.id).exists():
            return []
    model = load_model(spec)
    with staged_server_gguf(model, out_root / spec.id) as server_gguf:
        return [build_variant(model, q, out_root, compile_library, server_gguf, profile) for q in quants]
