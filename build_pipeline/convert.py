"""Source tensors -> the compiled model's parameters, one group at a time (fuse, then quantize)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from build_pipeline.errors import BuildError
from build_pipeline.quantization import Scheme, dequantize_q4, quantize_q4


def _load_group(source, param) -> np.ndarray:
    missing = [s for s in param.sources if s not in source.tensor_names]
    if missing:
        raise BuildError(
            f"{source.origin} lacks tensor(s) {', '.join(missing)} needed for {param.name}",
            "the weights do not match the model's config.json; re-download the model",
        )
    parts = [source.load(s) for s in param.sources]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def expected_shapes(config, param) -> tuple[int, ...] | None:
    """Shape a fused parameter must have, so a mismatched checkpoint fails with a clear message."""
    hd, nh, nkv = config.head_dim, config.num_attention_heads, config.num_key_value_heads
    h, ffn = config.hidden_size, config.intermediate_size
    name = param.name
    if name.endswith("qkv_proj.weight"):
        return ((nh + 2 * nkv) * hd, h)
    if name.endswith("qkv_proj.bias"):
        return ((nh + 2 * nkv) * hd,)
    if name.endswith("o_proj.weight"):
        return (h, nh * hd)
    if name.endswith("gate_up_proj.weight"):
        return (2 * ffn, h)
    if name.endswith("down_proj.weight"):
        return (h, ffn)
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return (config.vocab_size, h)
    if name.endswith("norm.weight"):
        return (h,)
    return None


def convert(source, config, family, scheme: Scheme) -> Iterator[tuple[str, np.ndarray, int]]:
    """Yield (param name, array, logical parameter count) in the order the model library declares them."""
    for param in family.weight_map(config):
        w = _load_group(source, param)
        want = expected_shapes(config, param)
        if want is not None and tuple(w.shape) != want:
            raise BuildError(
                f"{param.name} has shape {tuple(w.shape)} but the config implies {want}",
                "the weights do not match config.json; re-download the model",
            )
        if scheme.quantized and param.kind in ("linear", "embedding"):
            q_weight, q_scale = quantize_q4(w, scheme.dtype)
            base = param.name.removesuffix(".weight")
            yield f"{base}.q_weight", q_weight, w.size
            yield f"{base}.q_scale", q_scale, 0
        else:
            yield param.name, w.astype(scheme.dtype, copy=False), w.size
        del w


def dense_params(named_tensors) -> dict[str, np.ndarray]:
    """Quantized tensors -> float32 weights under the fused names (what the GPU computes with)."""
    tensors = dict(named_tensors)
    dense = {}
    for name, arr in tensors.items():
        if name.endswith(".q_weight"):
            base = name.removesuffix(".q_weight")
            dense[f"{base}.weight"] = dequantize_q4(arr, tensors[f"{base}.q_scale"])
        elif not name.endswith(".q_scale"):
            dense[name] = np.asarray(arr, dtype=np.float32)
    return dense
