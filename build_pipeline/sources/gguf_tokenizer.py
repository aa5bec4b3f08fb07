"""Rebuild a Hugging Face tokenizer.json (byte-level BPE) from GGUF metadata so ids match llama.cpp's."""

from __future__ import annotations

import json
from pathlib import Path

from build_pipeline.contract import TOKENIZER_FILE
from build_pipeline.errors import BuildError

_CONTROL, _USER_DEFINED = 3, 4
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def _split_then_bytes(regex: str) -> dict:
    """A tokenizer.json pre-tokenizer that splits by `regex` (isolated pieces), then maps bytes without a second
    regex pass (as the Hub's Qwen2 and Llama 3 tokenizers do)."""
    return {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "behavior": "Isolated", "invert": False, "pattern": {"Regex": regex}},
            {**_BYTE_LEVEL, "trim_offsets": False, "use_regex": False},
        ],
    }


# llama.cpp pre-tokenizer names -> equivalent HF pre-tokenizer.
_PRE_TOKENIZERS = {
    "default": _BYTE_LEVEL,
    "gpt2": _BYTE_LEVEL,
    # SmolLM: every digit is its own piece, then GPT-2's regex, no prefix space.
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL],
    },
    # Qwen2/2.5: Qwen's own split regex (single digits, letters with one leading non-letter), as in the
    # Hub tokenizer.json, then byte-level mapping without a second regex pass.
    "qwen2": _split_then_bytes(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
    # Llama 3 (tiktoken's cl100k split: numbers in runs of up to three digits), then byte-level mapping.
    "llama-bpe": _split_then_bytes(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
}


def _get(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def tokenizer_files_from_gguf(reader, path: Path) -> tuple[dict[str, bytes], str | None]:
    """(tokenizer.json + tokenizer_config.json bytes, chat template) from a GGUF reader."""
    model = _get(reader, "tokenizer.ggml.model")
    tokens = _get(reader, "tokenizer.ggml.tokens")
    if not tokens:
        raise BuildError(
            f"GGUF file {path.name} has no tokenizer (tokenizer.ggml.tokens is missing)",
            "use a GGUF that embeds its tokenizer, or the model's Hugging Face source",
        )
    if model != "gpt2":
        raise BuildError(
            f"GGUF tokenizer model {model!r} in {path.name} is not supported (only byte-level BPE, 'gpt2')",
            "build this model from its Hugging Face source, which ships tokenizer.json",
        )
    pre = _get(reader, "tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise BuildError(
            f"GGUF pre-tokenizer {pre!r} in {path.name} is not supported (known: {', '.join(_PRE_TOKENIZERS)})",
            "build this model from its Hugging Face source, which ships tokenizer.json",
        )
    merges = _get(reader, "tokenizer.ggml.merges") or []
    types = _get(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)

    added = [
        {
            "id": i,
            "content": tok,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": ttype == _CONTROL,
        }
        for i, (tok, ttype) in enumerate(zip(tokens, types, strict=True))
        if ttype in (_CONTROL, _USER_DEFINED)
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _PRE_TOKENIZERS[pre],
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": list(merges),
        },
    }

    def token(key):
        idx = _get(reader, f"tokenizer.ggml.{key}_token_id")
        return tokens[idx] if idx is not None and 0 <= idx < len(tokens) else None

    chat_template = _get(reader, "tokenizer.chat_template")
    tok_config = {
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "pad_token": token("padding"),
        "unk_token": token("unknown"),
        "add_bos_token": bool(_get(reader, "tokenizer.ggml.add_bos_token", False)),
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template,
    }
    files = {
        TOKENIZER_FILE: json.dumps(tokenizer, ensure_ascii=False).encode(),
        "tokenizer_config.json": json.dumps(tok_config, ensure_ascii=False, indent=2).encode(),
    }
    return files, chat_template
