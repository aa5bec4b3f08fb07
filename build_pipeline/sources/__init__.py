"""Where weights come from. Every source yields the same thing: a `SourceModel` in Hugging Face layout."""

from __future__ import annotations

from pathlib import Path

from build_pipeline.sources.source_model import SourceModel

__all__ = ["SourceModel", "open_source"]


def open_source(spec, config_dir: Path) -> SourceModel:
    """Open the source described by a model config's [source] table."""
    from build_pipeline.sources import gguf_file, hf_folder, hub

    kind = spec.kind
    if kind == "gguf":
        return gguf_file.open_gguf(gguf_file.locate(spec, config_dir))
    if kind == "hf-folder":
        path = Path(spec.path)
        return hf_folder.open_folder(path if path.is_absolute() else config_dir / path)
    if kind == "hub" and spec.file:
        return gguf_file.open_gguf(hub.download_file(spec.repo, spec.revision, spec.file))
    if kind == "hub":
        return hf_folder.open_folder(hub.download(spec.repo, spec.revision))
    raise AssertionError(kind)  # validated by model_config
