"""Which model the fallback serves, and where its files are: chat config, tokenizer, GGUF.

The chat config and tokenizer come from a built variant (the very mlc-chat-config.json and
tokenizer.json the browser loads), so both engines format prompts and stop identically. Without a
built variant they are derived from the model config with the pipeline's own code, which is what the
build would have written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from build_pipeline.chat_config import build_chat_config
from build_pipeline.contract import CHAT_CONFIG_FILE, MANIFEST_FILE, TOKENIZER_FILE, Manifest, load_manifest
from build_pipeline.errors import BuildError
from build_pipeline.families import get_family
from build_pipeline.gguf_export import server_gguf_path
from build_pipeline.model_config import ModelSpec, load_model_config
from build_pipeline.paths import model_configs_dir
from build_pipeline.quantization import get_scheme
from build_pipeline.sources import open_source
from build_pipeline.sources.gguf_file import locate


@dataclass(frozen=True)
class ModelRef:
    """The served model: its public id, the other names a request may use for it, and where to look."""

    id: str
    name: str
    models_dir: Path
    spec: ModelSpec | None = None  # when a model config exists
    aliases: frozenset = field(default_factory=frozenset)

    def accepts(self, name: str | None) -> bool:
        return name is None or name == self.id or name in self.aliases


def _model_specs(configs_dir: Path) -> list:
    """Every readable model config (a broken one must not take the fallback down with it)."""
    specs = []
    for path in sorted(Path(configs_dir).glob("*.toml")):
        try:
            specs.append(load_model_config(path))
        except BuildError:
            continue
    return specs


def _built_manifests(models_dir: Path) -> list[Manifest]:
    out = []
    for path in sorted(Path(models_dir).glob(f"*/*/{MANIFEST_FILE}")):
        try:
            out.append(load_manifest(path.parent))
        except (OSError, ValueError):  # a broken build must not take the fallback down
            continue
    return out


def resolve_model(wanted: str | None, models_dir: Path, configs_dir: Path | None = None) -> ModelRef:
    """The model to serve: `wanted` (LANTERN_FALLBACK_MODEL), else the default model config, else a built one."""
    models_dir = Path(models_dir)
    specs = _model_specs(configs_dir or model_configs_dir())
    manifests = _built_manifests(models_dir)
    if wanted is None:
        defaults = [s.id for s in specs if s.default] + [m.model for m in manifests if m.default]
        candidates = defaults or [s.id for s in specs] or [m.model for m in manifests]
        if not candidates:
            raise BuildError(
                "no model to serve: no model config and nothing built", "build a model or set LANTERN_FALLBACK_MODEL"
            )
        wanted = candidates[0]
    spec = next((s for s in specs if s.id == wanted), None)
    built = [m for m in manifests if m.model == wanted]
    name = spec.name if spec else (built[0].name if built else wanted)
    aliases = {m.id for m in built}
    if spec:
        aliases |= {f"{spec.id}-{q}" for q in spec.quantizations}
    return ModelRef(wanted, name, models_dir, spec, frozenset(aliases - {wanted}))


def served_models(wanted: str | None, models_dir: Path, configs_dir: Path | None = None) -> list[ModelRef]:
    """Every model the fallback answers for: the default one (see resolve_model) first, then each other
    model built in `models_dir`, by its id. Each gets its own engine, started on first use."""
    first = resolve_model(wanted, models_dir, configs_dir)
    built = sorted({m.model for m in _built_manifests(Path(models_dir))} - {first.id})
    return [first, *(resolve_model(model_id, models_dir, configs_dir) for model_id in built)]


def find_gguf(ref: ModelRef, explicit: str | None = None) -> Path | None:
    """The llama.cpp weights: an explicit path, the pipeline's model.gguf, or a GGUF source file."""
    if explicit:
        return Path(explicit)
    built = server_gguf_path(ref.models_dir / ref.id)
    if built.is_file():
        return built
    if ref.spec is not None and ref.spec.source.kind == "gguf":
        try:
            return locate(ref.spec.source, ref.spec.path.parent)
        except BuildError:
            return None
    return None


def load_chat_files(ref: ModelRef) -> tuple[dict, bytes]:
    """(mlc-chat-config.json, tokenizer.json bytes) of the served model."""
    for config_path in sorted((ref.models_dir / ref.id).glob(f"*/{CHAT_CONFIG_FILE}")):
        tokenizer = config_path.parent / TOKENIZER_FILE
        if tokenizer.is_file():
            return json.loads(config_path.read_text()), tokenizer.read_bytes()
    if ref.spec is None:
        raise BuildError(
            f"model {ref.id!r} is neither built in {ref.models_dir} nor described by a model config",
            "build it with `python -m build_pipeline build model_configs/<model>.toml`",
        )
    spec = ref.spec
    source = open_source(spec.source, spec.path.parent)
    config = get_family(spec.family).config_from_hf(source.hf_config)
    chat = build_chat_config(spec, source, config, get_scheme(spec.quantizations[0]))
    return chat, source.tokenizer_files[TOKENIZER_FILE]
