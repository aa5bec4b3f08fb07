"""Build one model config: source -> per-variant dir of shards, configs, tokenizer, library, manifest."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from build_pipeline.atomic import ensure_writable_dir, staged_dir
from build_pipeline.chat_config import CHAT_CONFIG_FILE, build_chat_config
from build_pipeline.families import Family, ModelConfig, family_of_hf_config, get_family
from build_pipeline.gguf_export import server_gguf_path, staged_server_gguf
from build_pipeline.errors import BuildError
from build_pipeline.manifest import build_manifest
from build_pipeline.model_config import ModelSpec
from build_pipeline.model_package import MANIFEST_FILE as PACKAGE_MANIFEST, index_params, package_manifest
from build_pipeline.quantization import get_scheme
from build_pipeline.sources import SourceModel, open_source
from build_pipeline.tensor_cache import INDEX_FILE, ShardWriter


@dataclass
class LoadedModel:
    """A model config with its source opened and its family config parsed: shared by all variants."""

    spec: ModelSpec
    source: SourceModel
    family: Family
    config: ModelConfig


def load_model(spec: ModelSpec) -> LoadedModel:
    source = open_source(spec.source, spec.path.parent)
    detected = family_of_hf_config(source.hf_config)
    if detected != spec.family:
        raise BuildError(
            f"{spec.path.name} says family {spec.family!r} but the weights are a {detected!r} model",
            f"set family = \"{detected}\" in {spec.path.name}",
        )
    family = get_family(spec.family)
    config = family.config_from_hf(source.hf_config)
    if spec.context_window > config.max_position_embeddings:
        raise BuildError(
            f"context_window {spec.context_window} exceeds the model's trained context "
            f"({config.max_position_embeddings})",
            f"lower context_window in {spec.path.name}",
        )
    return LoadedModel(spec, source, family, config)


def write_params(model: LoadedModel, scheme, out_dir: Path) -> tuple[dict, dict]:
    """Quantize + shard every parameter into out_dir; returns (tensor-cache index, per-weight formats)."""
    from build_pipeline.convert import convert

    writer = ShardWriter(out_dir)
    params = model.family.weight_map(model.config)
    bar = tqdm(total=len(params), desc=f"{model.spec.id} {scheme.name}: quantize+shard", unit="tensor",
               file=sys.stderr, disable=None)
    formats: dict[str, dict] = {}
    for name, array, count in convert(model.source, model.config, model.family, scheme, formats):
        info = formats.get(name.rsplit(".", 1)[0]) if name.rsplit(".", 1)[-1] in WEIGHT_PARTS else None
        writer.add(name, array, count, info and info["format"], info and info["source_type"])
        if not name.endswith((".q_scale", ".q_min")):
            bar.update(1)
    bar.close()
    return writer.finish(), formats


WEIGHT_PARTS = ("q_weight", "q_scale", "q_min")


def build_variant(model: LoadedModel, quantization: str, out_root: Path, compile_library: bool = True,
                  server_gguf: dict | None = None, profile: str | None = None) -> Path:
    """Build one variant into out_root/<id>/<quantization>, atomically; returns that directory."""
    scheme = get_scheme(quantization)
    final = out_root / model.spec.id / scheme.name
    with staged_dir(final) as tmp:
        index, formats = write_params(model, scheme, tmp)
        scheme = scheme.with_formats({base: f["format"] for base, f in formats.items()})
        for name, data in model.source.tokenizer_files.items():
            (tmp / name).write_bytes(data)
        chat_config = build_chat_config(model.spec, model.source, model.config, scheme)
        (tmp / CHAT_CONFIG_FILE).write_text(json.dumps(chat_config, indent=1, ensure_ascii=False))
        extra = [CHAT_CONFIG_FILE, INDEX_FILE, *model.source.tokenizer_files]
        libraries = []
        if compile_library:
            from build_pipeline.compiler import compile_variant

            libraries = compile_variant(model, scheme, tmp, profile)
            (tmp / PACKAGE_MANIFEST).write_text(json.dumps(package_manifest(index_params(index)), indent=1))
            extra += [PACKAGE_MANIFEST, *(lib["file"] for lib in libraries)]
        quality = _quality_of(tmp) if compile_library else None
        build_manifest(model.spec, model.config, scheme, tmp, index, libraries, extra, server_gguf, formats,
                       quality)
    return final


def _quality_of(variant_dir: Path) -> dict | None:
    """The quality figures the verification wrote (compiler/quality.py), for the manifest."""
    path = variant_dir / "verify.json"
    if not path.is_file():
        return None
    q = json.loads(path.read_text()).get("quality")
    keys = ("perplexity", "reference_perplexity", "ratio", "eval_tokens", "reference", "status")
    return {k: q[k] for k in keys if k in q} if q else None


def is_built(out_root: Path, model_id: str, quantization: str) -> bool:
    from build_pipeline.manifest import MANIFEST_FILE

    return (out_root / model_id / quantization / MANIFEST_FILE).exists()


def build(spec: ModelSpec, out_root: Path, quantizations=None, compile_library: bool = True,
          if_missing: bool = False, profile: str | None = None) -> list[Path]:
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
