"""`SourceModel`: a model as the families expect it, whatever file or folder it came from (the readers in
this package build one; the stages read nothing else)."""

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
