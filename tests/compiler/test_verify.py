"""Build verification (compiler/verify.py): what it compares, and that a mismatch fails the build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from build_pipeline.chat_template import format_prompt, prompt_pieces
from build_pipeline.compiler.verify import cut_at_stop, judge, prompt_token_ids
from build_pipeline.contract import VERIFY_FILE
from build_pipeline.errors import BuildError
from build_pipeline.stages.verify import verify_variant
from testing.browser_harness.builds import build, tiny_spec


def _report(dtype="float32", steps=None):
    steps = steps or [{"max_abs_diff": 1e-4, "scale": 20.0, "argmax_ref": 5, "argmax_got": 5, "ref_margin": 3.0}]
    return {"dtype": dtype, "steps": steps, "prompt_token_ids": [1, 2, 3], "greedy_text": "x"}


def test_judge_passes_small_differences():
    r = judge(_report())
    assert r["passed"] and r["argmax_agreement"] == "1/1" and r["summary"].startswith("PASS")


def test_judge_fails_large_logit_differences():
    r = judge(
        _report(steps=[{"max_abs_diff": 0.5, "scale": 20.0, "argmax_ref": 5, "argmax_got": 5, "ref_margin": 3.0}])
    )
    assert not r["passed"] and r["summary"].startswith("FAIL")


def test_judge_tolerates_argmax_flips_only_at_near_ties():
    tie = {"max_abs_diff": 1e-5, "scale": 10.0, "argmax_ref": 5, "argmax_got": 6, "ref_margin": 1e-4}
    clear = {"max_abs_diff": 1e-5, "scale": 10.0, "argmax_ref": 5, "argmax_got": 6, "ref_margin": 2.0}
    assert judge(_report(steps=[tie]))["passed"]
    assert judge(_report(steps=[tie]))["near_tie_flips"] == [0]
    assert not judge(_report(steps=[clear]))["passed"]


def test_f16_gets_a_looser_tolerance():
    step = {"max_abs_diff": 0.1, "scale": 20.0, "argmax_ref": 5, "argmax_got": 5, "ref_margin": 3.0}
    assert judge(_report("float16", [step]))["passed"]
    assert not judge(_report("float32", [step]))["passed"]


def test_cut_at_stop_mirrors_webllm():
    assert cut_at_stop([5, 6, 2, 7], {2}, 16) == ([5, 6], "stop")
    assert cut_at_stop([5, 6, 7], {2}, 3) == ([5, 6, 7], "length")


def test_prompt_pieces_reproduce_the_chat_template():
    conv = {
        "system_template": "<|im_start|>system\n{system_message}<|im_end|>\n",
        "system_message": "Be nice.",
        "roles": {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"},
        "role_templates": {"user": "{user_message}"},
        "seps": ["<|im_end|>\n"],
        "role_content_sep": "\n",
        "role_empty_sep": "\n",
        "add_role_after_system_message": True,
    }
    pieces = prompt_pieces(conv, [("user", "Hi?")])
    assert pieces == [
        "<|im_start|>system\nBe nice.<|im_end|>\n",
        "<|im_start|>user\nHi?<|im_end|>\n",
        "<|im_start|>assistant\n",
    ]
    assert "".join(pieces) == format_prompt(conv, [("user", "Hi?")])


@pytest.fixture(scope="module")
def tiny_variant(tmp_path_factory) -> tuple[object, Path]:
    root = tmp_path_factory.mktemp("verify")
    spec = tiny_spec(root)
    return spec, build(spec, "q4f32_1", root / "out")


def test_prompt_tokens_are_tokenized_piece_by_piece(tiny_variant):
    _, variant = tiny_variant
    ids, chat, tok = prompt_token_ids(variant, "Hello")
    im_start = tok.token_to_id("<|im_start|>")
    assert ids[0] == im_start and ids.count(im_start) == 3  # system, user, assistant headers
    report = json.loads((variant / VERIFY_FILE).read_text())
    assert report["prompt_token_ids"] == prompt_token_ids(variant)[0]


def test_a_parity_mismatch_fails_the_build(tiny_variant, monkeypatch, tmp_path):
    """Break the reference's RoPE (positions doubled): the compiled model no longer matches, so
    verification must raise BuildError and keep the per-step evidence."""
    from build_pipeline import reference
    from build_pipeline.build import load_model
    from build_pipeline.compiler.module import LibrarySettings
    from build_pipeline.compiler.profiles import resolve_profiles
    from build_pipeline.quantization import get_scheme

    spec, variant = tiny_variant
    real_rope = reference.ReferenceModel._rope
    monkeypatch.setattr(reference.ReferenceModel, "_rope", lambda self, x, pos: real_rope(self, x, pos * 2))
    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "cache"))
    scheme = get_scheme("q4f32_1")
    prof = resolve_profiles(None, scheme)[0]
    work = tmp_path / "variant"
    work.mkdir()
    for f in variant.iterdir():
        (work / f.name).write_bytes(f.read_bytes())
    with pytest.raises(BuildError, match="build verification failed") as err:
        verify_variant(load_model(spec), scheme, work, LibrarySettings(256, 64, prof.name), prof)
    report = json.loads((work / VERIFY_FILE).read_text())
    assert not report["passed"] and report["max_rel_diff"] > report["tolerance"]
    kept = list((tmp_path / "cache" / "verify-failures").glob("*.json"))
    assert kept and str(kept[0]) in str(err.value)
    assert np.isfinite(report["max_abs_diff"])
