"""Stage 2, quantize: the source's tensors -> the compiled model's parameters, quantized per the scheme.

A generator, one parameter group at a time, consumed by the shards stage as it goes, so a model is
never held in memory whole. The work is in convert.py (fuse, dequantize or transcode imported GGUF
blocks, quantize; quantization.py, weight_formats.py, float_quantizer.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from build_pipeline.convert import convert


def quantized_tensors(model, scheme, formats: dict[str, dict]) -> Iterator[tuple[str, np.ndarray, int]]:
    """(name, array, logical parameter count) per stored tensor; fills `formats` (each weight's storage
    format and GGUF source type) as it goes."""
    return convert(model.source, model.config, model.family, scheme, formats)
