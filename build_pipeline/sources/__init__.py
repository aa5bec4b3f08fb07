"""Where weights come from. Every source yields the same thing: a `SourceModel` in Hugging Face layout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class SourceModel:
    """A model as the families expect it: HF config.json, HF tensor names in [out, in] float32, tokenizer.

    `load(name)` reads one tensor at a time so peak memory tracks the largest tensor, not the model.
    """

    origin: str
    hf_config: dict
    tensor_names: list[str]
    load: Callable[[str], np.ndarray]
    tokenizer_files: dict[str, bytes]
    chat_template: str | None
    gguf_path: Path | None = None
    generation_config: dict = field(default_factory=dict)
    # Quantized sources (GGUF): name -> (float32 values, gguf_import.Imported or None when the tensor
    # is float or of a block type without a lossless mapping).
    load_imported: Callable[[str], tuple[np.ndarray, object]] | None = None


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
