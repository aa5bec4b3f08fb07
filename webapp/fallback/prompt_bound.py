"""A lower bound on a prompt's token count from its size alone, so an oversized request is refused
before any tokenizer pass (tokenizing holds the GIL: a flood of huge bodies would stall the whole site).

The rule, and why it is safe (it may only reject a prompt that is certain not to fit):

* Every token a BPE model emits stands for a fixed string of the (normalized) text, at most B bytes
  long, where B is the longest vocabulary entry or added token, measured in the input bytes it
  matches: for byte-level BPE one vocabulary character is one input byte, otherwise the entry's UTF-8
  length (an over-count: SentencePiece's "▁" is 3 bytes for 1 space, "<0x41>" 6 for 1 byte), and 4
  for an unknown-character token. So a piece of b bytes needs at least b / B tokens.
* Normalization may shrink text before that: NFKC maps a 4-byte mathematical letter to 1 byte,
  NFC composes at most 3 bytes into 1, lowercasing the Kelvin sign turns 3 bytes into 1. Such
  normalizers multiply B by their worst shrink (S). Replace/Prepend only keep or grow the text.
* Anything that can make text vanish or match unboundedly many bytes with one token turns the bound
  off (returns None): other normalizers (strip, strip accents, SentencePiece's precompiled maps),
  pre-tokenizers that drop text (whitespace splitting), a fused unknown token, a non-BPE model, or
  truncation configured in the tokenizer.

Hence tokens >= prefix ids + sum over pieces of bytes(piece) / (B * S) (UTF-8 bytes of the exact
pieces web-llm tokenizes). Characters alone would not be safe: a 4-byte character can be one token.
"""

from __future__ import annotations

import json

# Worst-case shrink factor (input bytes per normalized byte) of the normalizers that can shrink text.
SHRINK = {"NFC": 3, "NFD": 4, "NFKC": 4, "NFKD": 4, "Lowercase": 3}
KEEPS_TEXT = {"Prepend"}
SAFE_PRE_TOKENIZERS = {"ByteLevel", "Metaspace", "Digits", "Punctuation", "UnicodeScripts"}
UNKNOWN_CHAR_BYTES = 4


def _normalizer_shrink(spec: dict | None) -> int | None:
    if not spec:
        return 1
    kind = spec.get("type")
    if kind == "Sequence":
        factor = 1
        for item in spec.get("normalizers") or []:
            part = _normalizer_shrink(item)
            if part is None:
                return None
            factor *= part
        return factor
    if kind in SHRINK:
        return SHRINK[kind]
    if kind in KEEPS_TEXT:
        return 1
    if kind == "Replace":
        pattern = (spec.get("pattern") or {}).get("String")
        content = spec.get("content")
        if isinstance(pattern, str) and isinstance(content, str) and len(content.encode()) >= len(pattern.encode()):
            return 1
    return None


def _pre_tokenizer_keeps_text(spec: dict | None) -> bool:
    if not spec:
        return True
    kind = spec.get("type")
    if kind == "Sequence":
        return all(_pre_tokenizer_keeps_text(p) for p in spec.get("pretokenizers") or [])
    if kind == "Split":
        return spec.get("behavior") != "Removed"
    return kind in SAFE_PRE_TOKENIZERS


def _mentions(spec, kind: str) -> bool:
    if isinstance(spec, dict):
        return spec.get("type") == kind or any(_mentions(v, kind) for v in spec.values())
    if isinstance(spec, list):
        return any(_mentions(v, kind) for v in spec)
    return False


def max_bytes_per_token(tokenizer_json: str) -> int | None:
    """B * S from the rule above for this tokenizer.json, or None when no safe bound exists."""
    spec = json.loads(tokenizer_json)
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or spec.get("truncation"):
        return None
    if model.get("unk_token") and model.get("fuse_unk"):
        return None
    if not _pre_tokenizer_keeps_text(spec.get("pre_tokenizer")):
        return None
    shrink = _normalizer_shrink(spec.get("normalizer"))
    if shrink is None:
        return None
    byte_level = _mentions(spec.get("pre_tokenizer"), "ByteLevel") or _mentions(spec.get("decoder"), "ByteLevel")
    vocab = model.get("vocab") or {}
    longest = max((len(t) if byte_level else len(t.encode("utf-8", "surrogatepass")) for t in vocab), default=1)
    added = [str(t.get("content") or "") for t in spec.get("added_tokens") or []]
    longest = max([longest, UNKNOWN_CHAR_BYTES, *(len(t.encode("utf-8", "surrogatepass")) for t in added)])
    return longest * shrink


def min_tokens(pieces: list[str], prefix_ids: int, bytes_per_token: int | None) -> int:
    """At least how many tokens these pieces (each tokenized on its own) plus the prefix ids become."""
    if bytes_per_token is None:
        return 0
    size = sum(len(p.encode("utf-8", "surrogatepass")) for p in pieces)
    return prefix_ids + size // bytes_per_token
