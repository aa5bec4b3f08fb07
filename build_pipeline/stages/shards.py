"""Stage 3, shards: the quantized tensors written as MLC-format shards + tensor-cache.json (tensor_cache.py),
beside the files web-llm loads with them (tokenizer, mlc-chat-config.json)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from build_pipeline.chat_config import build_chat_config
from build_pipeline.contract import CHAT_CONFIG_FILE, TENSOR_CACHE_FILE
from build_pipeline.stages.quantize import quantized_tensors
from build_pipeline.tensor_cache import ShardWriter
from build_pipeline.weight_formats import is_aux_part, is_weight_part


def write_shards(
    model, scheme, tensors: Iterable[tuple[str, np.ndarray, int]], formats: dict[str, dict], out_dir: Path
) -> dict:
    """Write `tensors` (the quantize stage's stream) into out_dir; returns the tensor-cache index."""
    writer = ShardWriter(out_dir)
    params = model.family.weight_map(model.config)
    bar = tqdm(
        total=len(params),
        desc=f"{model.spec.id} {scheme.name}: quantize+shard",
        unit="tensor",
        file=sys.stderr,
        disable=None,
    )
    for name, array, count in tensors:
        info = formats.get(name.rsplit(".", 1)[0]) if is_weight_part(name.rsplit(".", 1)[-1]) else None
        writer.add(name, array, count, info["format"] if info else None, info["source_type"] if info else None)
        if not is_aux_part(name.rsplit(".", 1)[-1]):
            bar.update(1)
    bar.close()
    return writer.finish()


def write_params(model, scheme, out_dir: Path) -> tuple[dict, dict]:
    """Quantize + shard every parameter into out_dir; returns (tensor-cache index, per-weight formats)."""
    formats: dict[str, dict] = {}
    index = write_shards(model, scheme, quantized_tensors(model, scheme, formats), formats, out_dir)
    return index, formats


def write_package_files(model, scheme, out_dir: Path) -> list[str]:
    """The tokenizer files and mlc-chat-config.json beside the shards; returns every file name written by
    this stage (the index included)."""
    for name, data in model.source.tokenizer_files.items():
        (out_dir / name).write_bytes(data)
    chat_config = build_chat_config(model.spec, model.source, model.config, scheme)
    (out_dir / CHAT_CONFIG_FILE).write_text(json.dumps(chat_config, indent=1, ensure_ascii=False))
    return [CHAT_CONFIG_FILE, TENSOR_CACHE_FILE, *model.source.tokenizer_files]
