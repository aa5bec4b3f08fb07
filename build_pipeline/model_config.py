"""Declarative model configs (model_configs/*.toml): the single place a model's build choices live."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from build_pipeline.errors import BuildError
from build_pipeline.families import get_family
from build_pipeline.quantization import get_scheme

SOURCE_KINDS = ("gguf", "hf-folder", "hub")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    path: str | None = None  # gguf / hf-folder; relative paths are relative to the config file
    package: str | None = None  # gguf inside an installed Python distribution
    repo: str | None = None  # hub
    revision: str | None = None  # hub: pinned commit
    file: str | None = None  # hub: one GGUF file of a GGUF repo (else the HF folder files)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    name: str
    family: str
    license: str
    source: SourceSpec
    quantizations: tuple[str, ...]
    context_window: int
    prefill_chunk_size: int
    path: Path
    default: bool = False
    chat_template: str | None = None  # overrides the source's template
    system_message: str | None = None  # overrides the template's default system prompt
    stop_tokens: tuple[str, ...] = ()  # [chat] stop_tokens: extra tokens that end a reply
    generation: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)  # [quality]: max_ratio, warn_ratio, eval_tokens


def _require(table: dict, key: str, kind, where: str):
    if key not in table:
        raise BuildError(f"{where}: missing required key `{key}`", f"add `{key} = ...` to the config")
    value = table[key]
    if not isinstance(value, kind):
        raise BuildError(
            f"{where}: `{key}` must be a {kind.__name__ if isinstance(kind, type) else kind}",
            f"fix the value of `{key}`",
        )
    return value


def load_model_config(path: Path) -> ModelSpec:
    path = Path(path)
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BuildError(f"model config {path} does not exist", "pass a file from model_configs/") from None
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{where} is not valid TOML ({exc})", "fix the syntax error") from None

    model_id = _require(data, "id", str, where)
    if not _ID.match(model_id):
        raise BuildError(f"{where}: id {model_id!r} is not a valid model id", "use lowercase letters, digits, . _ -")
    family = _require(data, "family", str, where)
    get_family(family)
    quants = tuple(_require(data, "quantizations", list, where))
    if not quants:
        raise BuildError(f"{where}: `quantizations` is empty", 'list at least one, e.g. ["q4f32_1"]')
    for q in quants:
        get_scheme(q)

    src = _require(data, "source", dict, where)
    kind = _require(src, "type", str, f"{where} [source]")
    if kind not in SOURCE_KINDS:
        raise BuildError(f"{where}: unknown source type {kind!r}", f"use one of: {', '.join(SOURCE_KINDS)}")
    if kind == "hub":
        source = SourceSpec(
            kind,
            repo=_require(src, "repo", str, f"{where} [source]"),
            revision=_require(src, "revision", str, f"{where} [source]"),
            file=src.get("file"),
        )
    else:
        source = SourceSpec(kind, path=_require(src, "path", str, f"{where} [source]"), package=src.get("package"))

    chat = data.get("chat", {})
    context_window = _require(data, "context_window", int, where)
    prefill_chunk = int(data.get("prefill_chunk_size", min(512, context_window)))
    if not 0 < prefill_chunk <= context_window:
        raise BuildError(
            f"{where}: prefill_chunk_size {prefill_chunk} must be between 1 and context_window {context_window}",
            "lower prefill_chunk_size",
        )
    return ModelSpec(
        id=model_id,
        name=data.get("name", model_id),
        family=family,
        license=_require(data, "license", str, where),
        source=source,
        quantizations=quants,
        context_window=context_window,
        prefill_chunk_size=prefill_chunk,
        path=path.resolve(),
        default=bool(data.get("default", False)),
        chat_template=chat.get("template"),
        system_message=chat.get("system_message"),
        stop_tokens=tuple(chat.get("stop_tokens", ())),
        generation=dict(data.get("generation", {})),
        quality=_quality_table(data.get("quality", {}), where),
    )


def _valid_quality_limit(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return False
    if key == "eval_tokens":
        return isinstance(value, int) and value > 0
    return key in ("max_ratio", "warn_ratio") and isinstance(value, (int, float)) and value > 0


def _quality_table(table: dict, where: str) -> dict:
    """[quality] limits of the build's perplexity gate (stages/quality.py)."""
    for key, value in table.items():
        if not _valid_quality_limit(key, value):
            raise BuildError(
                f"{where}: [quality] {key} = {value!r} is not valid",
                "use max_ratio / warn_ratio (numbers >= 1) and eval_tokens (a positive integer)",
            )
    return dict(table)


def with_source_file(spec: ModelSpec, path: Path) -> ModelSpec:
    """The same model config built from a local GGUF file instead of its [source].

    For a Hub source this is the offline route (`build --source-file`, and the tests, which point it at a
    file fetched and sha256-checked from PyPI); the result must still be the model the config names, which
    the family check and the verification catch."""
    path = Path(path).resolve()
    if not path.is_file():
        raise BuildError(f"source file {path} does not exist", "pass the path of a GGUF file to --source-file")
    if path.suffix != ".gguf":
        raise BuildError(
            f"source file {path.name} is not a .gguf file",
            "--source-file takes a GGUF file; for a Hugging Face folder write a config with "
            '[source] type = "hf-folder"',
        )
    return replace(spec, source=SourceSpec("gguf", path=str(path)))


def needs_hub(spec: ModelSpec) -> bool:
    """Whether building this config downloads from the Hugging Face Hub (else it builds offline)."""
    return spec.source.kind == "hub"


def find_model_configs(root: Path) -> list[ModelSpec]:
    """Every model config directly in `root` (subfolders are not loaded)."""
    return [load_model_config(p) for p in sorted(Path(root).glob("*.toml"))]
