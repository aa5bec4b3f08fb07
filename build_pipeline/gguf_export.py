"""The server's copy of a model: one llama.cpp GGUF per model, `<out>/<model-id>/model.gguf`.

The server fallback runs llama.cpp, which reads GGUF. A GGUF-sourced model reuses its original file
(hardlink, else copy) so the server runs exactly the weights the browser build was made from; a
Hugging Face model is exported with the `gguf` writer (Q8_0 matrices, float32 norms). Either way the
file appears in one rename, and a sidecar records what it was made from so rebuilds can skip it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np
from tokenizers import Tokenizer

from build_pipeline import cpu_tier
from build_pipeline.contract import SERVER_GGUF_FILE, SERVER_GGUF_SIDECAR, TOKENIZER_FILE
from build_pipeline.errors import BuildError
from build_pipeline.families import family_of_gguf_arch, get_family
from build_pipeline.sources.gguf_file import _BLOCK_NAMES, _GLOBAL_NAMES
from build_pipeline.tensor_cache import file_sha256

EXPORT_VERSION = 1
OUT_TYPES = ("Q8_0", "F16", "F32")

# gguf token types (llama.cpp's llama_token_type).
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5

# Text the exported tokenizer must split exactly like tokenizer.json does (checked with llama.cpp).
_TOKENIZER_PROBES = [
    "Hello, world! What is the capital of France?",
    "I'm sure they'll say it's 1234567 or 3.14159 -- don't you think?",
    "  leading spaces,\ttabs\tand\n\nnew lines\r\n end   ",
    "héllo wörld, naïve café, Ünïcödé; 日本語のテキスト; Привет мир; 🙂🚀👍🏽",
    "def f(x):\n    return x**2 + 10_000  # code\n",
    "MiXeD CaSe ALLCAPS words's THEY'LL",
]


def server_gguf_path(model_dir: Path) -> Path:
    return Path(model_dir) / SERVER_GGUF_FILE


@contextlib.contextmanager
def staged_server_gguf(model, model_dir: Path):
    """What build() wraps its variants in: yields the GGUF's manifest entry (or None), and the file takes
    its final name only if every variant builds too — a failed build leaves nothing behind.

    The browser artifacts do not need the GGUF, so a model that cannot be exported still builds (with a
    warning, once the variants are done: if they fail, their error is the one that matters).
    """
    model_dir = Path(model_dir)
    created = not model_dir.exists()
    staged, problem, entry, fingerprint = None, None, None, None
    split, staged_parts = None, None
    try:
        entry, staged, fingerprint = prepare_server_gguf(model, model_dir)
        # The browser's copy (cpu_tier.py): parts of at most cpu_tier.PART_MAX_BYTES, staged the same way.
        split, staged_parts = cpu_tier.prepare_parts(staged or server_gguf_path(model_dir), entry, model_dir)
    except Exception as exc:  # noqa: BLE001 - reported after the variants (see above)
        problem = exc
    try:
        # The manifest's cpu_tier block lists the parts (cpu_tier.cpu_tier); the sidecar keeps `entry` alone.
        yield entry if entry is None or split is None else {**entry, "cpu_parts": split}
    except BaseException:
        if staged is not None:
            with contextlib.suppress(OSError):
                staged.unlink()
        cpu_tier.discard_parts(staged_parts)
        if created:
            with contextlib.suppress(OSError):
                model_dir.rmdir()  # only if nothing else is in it
        raise
    if staged is not None:
        assert entry is not None and fingerprint is not None  # prepared together with `staged`
        commit_server_gguf(model_dir, staged, entry, fingerprint)
    if split is not None:
        cpu_tier.commit_parts(model_dir, staged_parts, split)
    if problem is not None:
        why = problem if isinstance(problem, BuildError) else f"{type(problem).__name__}: {problem}"
        print(f"warning: no server fallback GGUF for {model.spec.id}: {why}", file=sys.stderr)


def write_server_gguf(model, model_dir: Path, out_type: str = "Q8_0") -> dict:
    """Make `model_dir/model.gguf` for a loaded model (reusing an up-to-date one); returns its manifest entry.

    The entry's `path` is relative to a variant directory (`../model.gguf`): one file serves every variant.
    """
    entry, staged, fingerprint = prepare_server_gguf(model, model_dir, out_type)
    if staged is not None:
        commit_server_gguf(Path(model_dir), staged, entry, fingerprint)
    return entry


def prepare_server_gguf(model, model_dir: Path, out_type: str = "Q8_0"):
    """(entry, staged file or None when the current model.gguf is up to date, fingerprint)."""
    if out_type not in OUT_TYPES:
        raise BuildError(f"unknown GGUF export type {out_type!r}", f"use one of: {', '.join(OUT_TYPES)}")
    model_dir = Path(model_dir)
    final = server_gguf_path(model_dir)
    fingerprint = _fingerprint(model, out_type)
    current = _read_sidecar(model_dir)
    if (
        current
        and current.get("fingerprint") == fingerprint
        and final.exists()
        and final.stat().st_size == current["entry"]["bytes"]
    ):
        return current["entry"], None, fingerprint
    model_dir.mkdir(parents=True, exist_ok=True)
    staged = _tmp_beside(final)
    try:
        if model.source.gguf_path is not None:
            _link_or_copy(Path(model.source.gguf_path), staged)
            entry: dict[str, object] = {"origin": "source", "type": _gguf_file_type(staged)}
        else:
            export_gguf(model, staged, out_type)
            check_tokenizer(staged, model.source.tokenizer_files[TOKENIZER_FILE])
            entry = {"origin": "export", "type": out_type}
        entry = {
            "path": f"../{SERVER_GGUF_FILE}",
            "bytes": staged.stat().st_size,
            "sha256": file_sha256(staged),
            **entry,
        }
    except BaseException:
        with contextlib.suppress(OSError):
            staged.unlink()
        raise
    return entry, staged, fingerprint


def commit_server_gguf(model_dir: Path, staged: Path, entry: dict, fingerprint: str) -> None:
    os.replace(staged, server_gguf_path(model_dir))
    _write_json_atomic(model_dir / SERVER_GGUF_SIDECAR, {"fingerprint": fingerprint, "entry": entry})


def _read_sidecar(model_dir: Path) -> dict | None:
    try:
        return json.loads((model_dir / SERVER_GGUF_SIDECAR).read_text())
    except (OSError, ValueError):
        return None


def _fingerprint(model, out_type: str) -> str:
    """What the GGUF depends on: the source files (path, size, mtime) and, for exports, the chat template."""
    source = model.source
    if source.gguf_path is not None:
        files = [Path(source.gguf_path)]
        extra = {}
    else:
        origin = Path(source.origin)
        files = (
            sorted(p for p in origin.iterdir() if p.suffix in (".safetensors", ".json", ".jinja"))
            if origin.is_dir()
            else [origin]
        )
        extra = {"type": out_type, "template": model.spec.chat_template}
    stats = []
    for p in files:
        st = p.stat()
        stats.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"version": EXPORT_VERSION, "files": stats, **extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _tmp_beside(final: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    os.unlink(tmp)
    return Path(tmp)


def _link_or_copy(src: Path, dest: Path) -> None:
    """Hardlink when on the same filesystem (no second copy on disk), else copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = _tmp_beside(path)
    try:
        tmp.write_text(json.dumps(data, indent=1))  # created with the umask's mode, like the GGUF
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _gguf_file_type(path: Path) -> str:
    """The dominant tensor type of a GGUF (e.g. Q4_1), for the manifest."""
    reader = gguf.GGUFReader(str(path))
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + int(t.n_elements)
    return max(counts, key=counts.__getitem__) if counts else "unknown"


# ---------------------------------------------------------------------------------------------
# Export of Hugging Face weights


def _gguf_name(hf_name: str) -> str | None:
    for gg, hf in _GLOBAL_NAMES.items():
        if hf == hf_name:
            return gg
    parts = hf_name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[2].isdigit():
        for gg, hf in _BLOCK_NAMES.items():
            if hf == parts[3]:
                return f"blk.{parts[2]}.{gg}"
    return None


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row interleave for its RoPE kernel (inverse of gguf_file.unpermute_rows)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _encode_tensor(arr: np.ndarray, out_type: str):
    """(data, raw_dtype or None) for one tensor: Q8_0/F16 for matrices whose rows split into 32s, else F32."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.ndim < 2 or out_type == "F32":
        return arr, None
    if out_type == "F16":
        return arr.astype(np.float16), None
    if arr.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]:
        return arr.astype(np.float16), None
    q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
    return q, gguf.GGMLQuantizationType.Q8_0


def export_gguf(model, path: Path, out_type: str = "Q8_0") -> None:
    """Write a llama.cpp GGUF of `model` (a build.LoadedModel with a Hugging Face layout source) to `path`."""
    cfg, source, spec = model.config, model.source, model.spec
    arch = get_family(cfg.family).gguf_export_architecture
    window = cfg.to_dict().get("sliding_window")
    if window and window < spec.context_window:
        raise BuildError(
            f"{spec.id} attends over a sliding window of {window} tokens, which llama.cpp's GGUF architecture "
            f"{arch!r} does not apply: the server fallback would compute a different model past token {window}",
            f"set context_window <= {window} in {spec.path.name}, or serve this model through an upstream "
            "server (LANTERN_FALLBACK_UPSTREAM)",
        )
    if arch is None:
        raise BuildError(f"no GGUF export for family {cfg.family!r}", "serve this model through an upstream server")
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(spec.name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    if cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size:
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(
        {
            "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "F16": gguf.LlamaFileType.MOSTLY_F16,
            "F32": gguf.LlamaFileType.ALL_F32,
        }[out_type]
    )
    rope_freqs = _add_rope_scaling(writer, cfg)
    _add_tokenizer(writer, model)

    heads = {"attn_q.weight": cfg.num_attention_heads, "attn_k.weight": cfg.num_key_value_heads}
    permuted = family_of_gguf_arch(arch, path.name).gguf.permuted_qk  # the written architecture's layout
    for hf_name in source.tensor_names:
        name = _gguf_name(hf_name)
        if name is None:
            continue  # e.g. rotary_emb.inv_freq in old checkpoints: llama.cpp computes it
        if name == "output.weight" and cfg.tie_word_embeddings:
            continue
        arr = source.load(hf_name)
        if permuted and name.split(".", 2)[-1] in heads:
            arr = permute_rows(arr, heads[name.split(".", 2)[-1]])
        data, raw = _encode_tensor(arr, out_type)
        writer.add_tensor(name, data, raw_dtype=raw)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_rope_scaling(writer, cfg) -> np.ndarray | None:
    """Linear scaling is a GGUF key; Llama-3 scaling is a per-frequency factor tensor (rope_freqs)."""
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in (None, "default"):
        return None
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        return None
    if kind == "llama3":
        base = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim))
        return (base / cfg.rope_inv_freq()).astype(np.float32)
    raise BuildError(f"rope scaling {kind!r} has no GGUF export", "serve this model through an upstream server")


def pre_tokenizer_name(tok_json: dict) -> str:
    """The llama.cpp pre-tokenizer that splits text like tokenizer.json's pre_tokenizer does."""
    pre = tok_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        regex = (parts[0].get("pattern") or {}).get("Regex", "")
        if r"\p{N}{1,3}" in regex:
            return "llama-bpe"
        if r"|\p{N}|" in regex:
            return "qwen2"
    raise BuildError(
        f"no llama.cpp equivalent known for this tokenizer's pre-tokenizer ({json.dumps(pre)[:200]})",
        "serve this model through an upstream server (LANTERN_FALLBACK_UPSTREAM) with its own GGUF",
    )


def _add_tokenizer(writer, model) -> None:
    """Byte-level BPE vocabulary, merges, special ids and chat template as llama.cpp reads them."""
    source, cfg = model.source, model.config
    tok_json = json.loads(source.tokenizer_files[TOKENIZER_FILE])
    tok_cfg = json.loads(source.tokenizer_files.get("tokenizer_config.json", b"{}"))
    bpe = tok_json.get("model") or {}
    decoder = (tok_json.get("decoder") or {}).get("type")
    if bpe.get("type") != "BPE" or decoder != "ByteLevel":
        raise BuildError(
            "only byte-level BPE tokenizers can be exported to GGUF (this one is "
            f"{bpe.get('type')!r} with decoder {decoder!r})",
            "serve this model through an upstream server (LANTERN_FALLBACK_UPSTREAM) with its own GGUF",
        )
    vocab = dict(bpe["vocab"])
    added = tok_json.get("added_tokens", [])
    for t in added:
        vocab[t["content"]] = t["id"]
    n = max(cfg.vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [_UNUSED] * n
    for tok, i in vocab.items():
        tokens[i], types[i] = tok, _NORMAL
    for t in added:
        types[t["id"]] = _CONTROL if t.get("special") else _USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe.get("merges", [])]

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tok_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)

    def token_id(key, hf_key):
        tok = tok_cfg.get(key)
        tok = tok.get("content") if isinstance(tok, dict) else tok
        if tok in vocab:
            return vocab[tok]
        value = source.hf_config.get(hf_key)
        return value[0] if isinstance(value, list) and value else value

    for key, hf_key, add in (
        ("bos_token", "bos_token_id", writer.add_bos_token_id),
        ("eos_token", "eos_token_id", writer.add_eos_token_id),
        ("pad_token", "pad_token_id", writer.add_pad_token_id),
    ):
        value = token_id(key, hf_key)
        if isinstance(value, int):
            add(value)
    # Chat templates that want a BOS emit it themselves; llama.cpp must not add a second one.
    writer.add_add_bos_token(bool(tok_cfg.get("add_bos_token", False)))
    writer.add_add_eos_token(False)
    template = model.spec.chat_template or source.chat_template
    if template:
        writer.add_chat_template(template)


class _LlamaVocab:
    """llama.cpp's tokenizer of a GGUF, loaded vocabulary-only: no weights, no context (and so none of
    the context warnings llama.cpp would print into the build's output)."""

    def __init__(self, path: Path):
        import llama_cpp  # heavy (llama.cpp's native library): only when a build exports a GGUF

        self._lib = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        # llama-cpp-python prints llama.cpp's log lines at or above this logger's level.
        quiet = logging.getLogger("llama-cpp-python")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        finally:
            quiet.setLevel(level)
        if not self._model:
            raise BuildError(
                f"llama.cpp cannot read the exported GGUF {path.name}", "report this as a bug in the GGUF export"
            )
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        size = len(data) + 8
        buf = (self._lib.llama_token * size)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, size, False, True)
        if n < 0:
            size = -n
            buf = (self._lib.llama_token * size)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, size, False, True)
        return list(buf[:n])

    def close(self) -> None:
        self._lib.llama_model_free(self._model)


def check_tokenizer(gguf_path: Path, tokenizer_json: bytes) -> None:
    """Fail the build unless llama.cpp tokenizes sample text into the same ids as tokenizer.json."""
    hf = Tokenizer.from_str(tokenizer_json.decode())
    specials = [t["content"] for t in json.loads(tokenizer_json).get("added_tokens", []) if t.get("special")]
    probes = list(_TOKENIZER_PROBES)
    if len(specials) >= 2:
        probes.append(f"{specials[1]}user\nHi there{specials[-1]}\n{specials[1]}assistant\n")
    vocab = _LlamaVocab(gguf_path)
    try:
        for text in probes:
            ours = vocab.tokenize(text)
            theirs = hf.encode(text, add_special_tokens=False).ids
            if ours != theirs:
                raise BuildError(
                    f"the exported GGUF tokenizes {text[:40]!r} differently from tokenizer.json "
                    f"({ours[:12]} vs {theirs[:12]})",
                    "serve this model through an upstream server (LANTERN_FALLBACK_UPSTREAM) with its own GGUF",
                )
    finally:
        vocab.close()
