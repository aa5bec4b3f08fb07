"""Source tensors -> the compiled model's parameters, one group at a time (fuse, then quantize)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from build_pipeline import float_quantizer
from build_pipeline.contract import WEBLLM_DEVICE_FLOOR
from build_pipeline.errors import BuildError
from build_pipeline.families import Family, ModelConfig
from build_pipeline.gguf_import import join_rows
from build_pipeline.quantization import Scheme, quantize_q4
from build_pipeline.sources import SourceModel
from build_pipeline.tensor_cache import iter_tensors, read_formats, read_index, read_tensor
from build_pipeline.weight_formats import FLOAT, MLC_Q4, Q4_MIN, dequantize, get_format, is_aux_part, split_rows

# The largest stored tensor a variant may have: WebGPU's default maxStorageBufferBindingSize (128 MiB), so
# a model's required_limits stay at what every adapter offers (issue 19).
BINDING_LIMIT = WEBLLM_DEVICE_FLOOR["maxStorageBufferBindingSize"]


def _weight_base(name: str) -> str | None:
    """The weight base name of the stored tensor that carries a quantized weight (q_weight, s0_q_weight)."""
    for suffix in (".q_weight", ".s0_q_weight"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return None


def _is_aux(name: str) -> bool:
    return is_aux_part(name.rsplit(".", 1)[-1])


def _load_group(source, param) -> np.ndarray:
    missing = [s for s in param.sources if s not in source.tensor_names]
    if missing:
        raise BuildError(
            f"{source.origin} lacks tensor(s) {', '.join(missing)} needed for {param.name}",
            "the weights do not match the model's config.json; re-download the model",
        )
    parts = [source.load(s) for s in param.sources]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def _load_imported(source, param):
    """(float32 values, Imported or None): the lossless form when every part has one."""
    loaded = [source.load_imported(s) for s in param.sources]
    values = loaded[0][0] if len(loaded) == 1 else np.concatenate([v for v, _ in loaded], axis=0)
    if any(imp is None for _, imp in loaded):
        return values, None
    return values, join_rows([imp for _, imp in loaded], values)


def _quantize(scheme: Scheme, param, source) -> tuple[tuple[int, ...], list[np.ndarray], str, str | None]:
    """(float shape, stored tensors, format name, GGUF source type or None) of one linear/embedding.

    Only the shape of the float values is returned: they are dropped before the lossless import packs its
    integers, so a large embedding is never held as float32 and packed at once (peak build memory)."""
    if scheme.kind == "asym" and getattr(source, "load_imported", None) is not None:
        missing = [s for s in param.sources if s not in source.tensor_names]
        if not missing:
            values, imported = _load_imported(source, param)
            shape = values.shape
            if imported is not None:
                del values
                return shape, imported.stored(scheme.dtype), imported.fmt.name, imported.source_type
            return shape, float_quantizer.quantize(values, Q4_MIN, scheme.dtype), Q4_MIN.name, None
    w = _load_group(source, param)
    if scheme.kind == "asym":
        return w.shape, float_quantizer.quantize(w, Q4_MIN, scheme.dtype), Q4_MIN.name, None
    return w.shape, list(quantize_q4(w, scheme.dtype)), MLC_Q4.name, None


def convert(
    source: SourceModel, config: ModelConfig, family: Family, scheme: Scheme, formats: dict | None = None
) -> Iterator[tuple[str, np.ndarray, int]]:
    """Yield (param name, array, logical parameter count) in the order the model library declares them.

    `formats`, when given, receives {weight base name: {"format", "source_type"}} for every
    linear/embedding (what the compiler and the tensor cache need to know)."""
    for param in family.weight_map(config):
        quantize = scheme.quantized and param.kind in ("linear", "embedding")
        if quantize:
            shape, stored, fmt_name, source_type = _quantize(scheme, param, source)
            # Within one WebGPU binding each (the embedding and output matrix can exceed it).
            fmt, stored = split_rows(get_format(fmt_name), stored, BINDING_LIMIT)
            fmt_name = fmt.name
        else:
            w = _load_group(source, param)
            shape = w.shape
        if param.shape is not None and tuple(shape) != param.shape:
            raise BuildError(
                f"{param.name} has shape {tuple(shape)} but the config implies {param.shape}",
                "the weights do not match config.json; re-download the model",
            )
        if quantize:
            base = param.name.removesuffix(".weight")
            if formats is not None:
                formats[base] = {"format": fmt_name, "source_type": source_type}
            for i, (suffix, arr) in enumerate(zip(get_format(fmt_name).tensor_suffixes(), stored, strict=True)):
                yield f"{base}.{suffix}", arr, math.prod(shape) if i == 0 else 0
            del stored
        else:
            if formats is not None and param.kind in ("linear", "embedding"):
                formats[param.name.removesuffix(".weight")] = {"format": FLOAT.name, "source_type": None}
            yield param.name, w.astype(scheme.dtype, copy=False), w.size
            del w


def dense_params(named_tensors, formats: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Quantized tensors -> float32 weights under the fused names (what the GPU computes with).

    `formats` maps weight base names to format names (tensor_cache.read_formats); weights not in it
    are MLC q4 (the only format before per-tensor formats existed)."""
    tensors = dict(named_tensors)
    formats = formats or {}
    dense = {}
    for name, arr in tensors.items():
        base = _weight_base(name)
        if base is not None:
            fmt = get_format(formats.get(base, MLC_Q4.name))
            dense[f"{base}.weight"] = dequantize(fmt, [tensors[f"{base}.{s}"] for s in fmt.tensor_suffixes()])
        elif not _is_aux(name):
            dense[name] = np.asarray(arr, dtype=np.float32)
    return dense


def dense_variant_params(variant_dir) -> dict[str, np.ndarray]:
    """dense_params of a built variant, with its recorded per-weight formats."""
    return dense_params(iter_tensors(variant_dir), read_formats(variant_dir))


DEQUANT_ROWS = 4096


class LazyDenseParams(Mapping):
    """dense_variant_params without holding them: each weight is dequantized from the shards
    when it is read and dropped after use, so a reference forward pass holds one float32 weight at a time
    (Qwen2.5-0.5B's dense weights are 2.5 GB; its largest, the embedding, 545 MB)."""

    def __init__(self, variant_dir: Path):
        variant_dir = Path(variant_dir)
        # name -> (shard path, record), read by tensor_cache.read_tensor when asked for
        self._records = {
            rec["name"]: (variant_dir / shard["dataPath"], rec)
            for shard in read_index(variant_dir)["records"]
            for rec in shard["records"]
        }
        self._formats = read_formats(variant_dir)
        self._names = [
            f"{_weight_base(n)}.weight" if _weight_base(n) is not None else n
            for n in self._records
            if not _is_aux(n) or _weight_base(n) is not None
        ]

    def _read(self, name: str) -> np.ndarray:
        return read_tensor(*self._records[name])

    def __getitem__(self, name: str) -> np.ndarray:
        base = name.removesuffix(".weight")
        if f"{base}.q_weight" in self._records or f"{base}.s0_q_weight" in self._records:
            fmt = get_format(self._formats.get(base, MLC_Q4.name))
            names = [f"{base}.{s}" for s in fmt.tensor_suffixes()]
            # Segments (mixed fused q/k/v, or row blocks of a weight too large for one binding) in turn, each a
            # block of rows at a time, reading only that block's stored bytes.
            spans, i = [], 0
            for f, _ in fmt.segments or ((fmt, 0),):
                n = len(f.tensor_suffixes())
                spans.append((f, names[i : i + n], self._records[names[i]][1]["shape"][0]))
                i += n
            out = None
            total, row = sum(rows for _, _, rows in spans), 0
            for f, parts, rows in spans:
                for a in range(0, rows, DEQUANT_ROWS):
                    b = min(a + DEQUANT_ROWS, rows)
                    block = dequantize(f, [read_tensor(*self._records[n], rows=(a, b)) for n in parts])
                    if out is None:
                        out = np.empty((total, block.shape[1]), dtype=np.float32)
                    out[row + a : row + b] = block
                row += rows
            if out is None:
                raise KeyError(name)  # a weight with no rows
            return out
        if name not in self._records:
            raise KeyError(name)
        return self._read(name).astype(np.float32, copy=False)

    def __contains__(self, name: object) -> bool:
        return name in self._names  # without reading the weight (Mapping's default would)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class SourceDenseParams(Mapping):
    """The unquantized model's dense params under the compiled model's (fused) names, read from the source
    when asked for and not kept: what the q0f32 reference perplexity runs on without holding the model."""

    def __init__(self, source, config, family):
        self._source = source
        self._params = {p.name: p for p in family.weight_map(config)}

    def __getitem__(self, name: str) -> np.ndarray:
        return _load_group(self._source, self._params[name]).astype(np.float32, copy=False)

    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)
