"""mlc-chat-config.json: what web-llm needs to tokenize, prompt and sample for one variant."""

from __future__ import annotations

import json

from build_pipeline.chat_template import derive_conv_template
from build_pipeline.contract import TOKENIZER_FILE
from build_pipeline.errors import BuildError

TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer_config.json")


def _token_ids(tokenizer_json: dict):
    """(content -> id for added tokens, list of special token strings)."""
    added = tokenizer_json.get("added_tokens", [])
    ids = {t["content"]: t["id"] for t in added}
    vocab = tokenizer_json.get("model", {}).get("vocab", {})
    if isinstance(vocab, dict):
        ids = {**vocab, **ids}
    specials = [t["content"] for t in added if t.get("special")]
    return ids, specials


def _token_str(value):
    if isinstance(value, dict):  # older tokenizer_config.json: {"content": "..."}
        return value.get("content")
    return value


def build_chat_config(spec, source, model_config, scheme) -> dict:
    tok_json = json.loads(source.tokenizer_files[TOKENIZER_FILE])
    tok_cfg = json.loads(source.tokenizer_files.get("tokenizer_config.json", b"{}"))
    ids, specials = _token_ids(tok_json)
    template = spec.chat_template or source.chat_template
    if not template:
        raise BuildError(
            f"{source.origin} has no chat template",
            f'add [chat] template = "..." (a Jinja chat template) to {spec.path.name}',
        )
    special = {k: _token_str(tok_cfg.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    conv = derive_conv_template(template, special, specials, ids.get, spec.system_message)

    def tid(key, hf_key):
        token = special.get(key)
        if token is not None and token in ids:
            return ids[token]
        value = source.hf_config.get(hf_key)
        return value[0] if isinstance(value, list) and value else value

    bos, eos, pad = tid("bos_token", "bos_token_id"), tid("eos_token", "eos_token_id"), tid("pad_token", "pad_token_id")
    extra = [ids.get(t) for t in spec.stop_tokens]
    if None in extra:
        missing = [t for t, i in zip(spec.stop_tokens, extra, strict=True) if i is None]
        raise BuildError(
            f"{spec.path.name}: [chat] stop_tokens {missing} are not in the tokenizer",
            "list tokens of this model's vocabulary (e.g. its end-of-turn token)",
        )
    eos_ids = sorted({i for i in [eos, *conv["stop_token_ids"], *extra] if i is not None})
    conv["stop_token_ids"] = eos_ids
    gen = {**source.generation_config, **spec.generation}
    return {
        "version": "0.1.0",
        "model_type": model_config.family,
        "quantization": scheme.name,
        "model_config": model_config.to_dict(),
        "vocab_size": model_config.vocab_size,
        "context_window_size": spec.context_window,
        "sliding_window_size": -1,
        "prefill_chunk_size": spec.prefill_chunk_size,
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "temperature": float(gen.get("temperature", 0.7)),
        "presence_penalty": float(gen.get("presence_penalty", 0.0)),
        "frequency_penalty": float(gen.get("frequency_penalty", 0.0)),
        "repetition_penalty": float(gen.get("repetition_penalty", 1.0)),
        "top_p": float(gen.get("top_p", 0.95)),
        "tokenizer_files": [f for f in TOKENIZER_FILES if f in source.tokenizer_files],
        "tokenizer_info": {
            "token_postproc_method": "byte_level",
            "prepend_space_in_encode": False,
            "strip_space_in_decode": False,
        },
        "conv_template": conv,
        "pad_token_id": pad if pad is not None else (eos if eos is not None else 0),
        "bos_token_id": bos,
        "eos_token_id": eos_ids,
    }
