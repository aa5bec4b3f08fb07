"""The manifest's answer check (build_pipeline/probe.py): made from the verify report, nothing recomputed.

The page side (static/js/probe.js judging a real engine's answer, and falling back) is tests/page/test_page_probe.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from build_pipeline.contract import TOKENIZER_FILE, parse_manifest
from build_pipeline.probe import PROBE_TOKENS, TIE_FACTOR, probe_from_report

WORDS = ["<|im_end|>", "The", " capital", " of", " France", " is", " Paris", ".", " Lyon"]


def _variant(tmp_path: Path) -> Path:
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|im_end|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.Fuse()  # tokens carry their own spaces, as byte-level BPE ones do
    tok.save(str(tmp_path / TOKENIZER_FILE))
    return tmp_path


def _report(dtype="float32", tolerance=2e-3, margins=(0.05, 4, 4, 4, 4, 4, 4, 3), stop=True) -> dict:
    raw = [1, 2, 3, 4, 5, 6, 7, 0] if stop else [1, 2, 3, 4, 5, 6, 7, 8, 8, 8]
    steps = [{"ref_margin": m, "scale": 25.0, "max_abs_diff": 1e-4} for m in margins]
    steps += [{"ref_margin": 4, "scale": 25.0, "max_abs_diff": 1e-4}] * (len(raw) - len(steps))
    return {
        "passed": True,
        "prompt": "What is the capital of France?",
        "prompt_token_ids": list(range(37)),
        "greedy_token_ids": raw[:7] if stop else raw,
        "raw_greedy_token_ids": raw,
        "finish_reason": "stop" if stop else "length",
        "steps": steps,
        "tolerance": tolerance,
        "dtype": dtype,
    }


def test_probe_is_the_verified_greedy_answer_with_its_ties_and_stop(tmp_path):
    probe = probe_from_report(_report(), _variant(tmp_path))
    assert probe["prompt"] == "What is the capital of France?" and probe["max_tokens"] == PROBE_TOKENS
    assert probe["expected_text"] == "The capital of France is Paris."
    texts = [t["text"] for t in probe["tokens"]]
    assert texts == ["The", " capital", " of", " France", " is", " Paris", ".", "<|im_end|>"]
    # The CPU build stopped after 7 tokens: the device must stop there too.
    assert [t["stop"] for t in probe["tokens"]] == [False] * 7 + [True]
    # Tolerance: twice the verify tolerance of the logit range; 0.05 logits is a tie at f32, 4 logits is not.
    assert all(t["tolerance"] == TIE_FACTOR * 2e-3 * 25.0 for t in probe["tokens"])
    assert [t["tie"] for t in probe["tokens"]] == [True] + [False] * 7


def test_f16_builds_get_the_wider_f16_tolerance(tmp_path):
    probe = probe_from_report(_report("float16", 4e-2, margins=(0.05, 1.5, 4, 4, 4, 4, 4, 3)), _variant(tmp_path))
    assert probe["dtype"] == "float16" and probe["tokens"][0]["tolerance"] == TIE_FACTOR * 4e-2 * 25.0
    assert [t["tie"] for t in probe["tokens"][:3]] == [True, True, False]


def test_a_long_answer_checks_the_first_probe_tokens_only(tmp_path):
    probe = probe_from_report(_report(stop=False), _variant(tmp_path))
    assert len(probe["tokens"]) == PROBE_TOKENS and not any(t["stop"] for t in probe["tokens"])


def test_no_probe_without_a_passing_verification(tmp_path):
    variant = _variant(tmp_path)
    assert probe_from_report(None, variant) is None
    assert probe_from_report({**_report(), "passed": False}, variant) is None


def test_the_manifest_carries_the_probe(tmp_path):
    """contract.Manifest reads it back (older manifests without it still load: None)."""
    base = {
        "id": "m-q",
        "model": "m",
        "name": "M",
        "family": "llama",
        "quantization": "q",
        "context_window": 256,
        "prefill_chunk_size": 64,
        "param_count": 1,
        "bits_per_param": 4.0,
        "download_bytes": 1,
        "required_features": [],
        "required_limits": {},
        "estimated_gpu_memory_bytes": 1,
        "files": [],
    }
    assert parse_manifest(base).probe is None
    probe = probe_from_report(_report(), _variant(tmp_path))
    assert parse_manifest(json.dumps({**base, "probe": probe})).probe == probe
