"""The per-device answer check (issue 21, item 3): what a browser must compute for a short fixed prompt.

A GPU can run every kernel and still compute wrong numbers (a driver bug, f16 overflow). The verify stage
already ran the CPU build of this very variant greedily on a fixed chat prompt (compiler/verify.py
`PROMPT`, rendered by the variant's conv_template exactly as web-llm renders it) and compared every step's
logits with the numpy reference. This module turns that report into the manifest's `probe` block (nothing
is recomputed): the prompt, how many tokens to generate, and the tokens the device must produce. On the
first load of a variant on an adapter the page (static/js/probe.js) asks web-llm for the same answer and
compares.

Tolerance. The verify stage accepts a build whose logits are within `tol * max(1, |logit|max)` of the
reference (compiler/verify.py TOLERANCE: 2e-3 for f32 math, 4e-2 for f16). A correct device computes the
same model with another reduction order and precision and is held to that same bound, so it can swap the
two best tokens of a step only where their reference margin is at most twice it (each of the two logits
moving by the bound towards the other). Such a step is a `tie`: there the device may pick another token
if the expected one is among its best few (`top_logprobs`) and no further than the step's `tolerance`
(logits) below its pick — and the check ends there, since the two continuations differ from then on.
Any other difference is a wrong answer. f16 builds get a wider tolerance (more ties) than f32 builds.
"""

from __future__ import annotations

from pathlib import Path

from build_pipeline.contract import TOKENIZER_FILE

PROBE_TOKENS = 8  # new tokens the page generates (≤ compiler/verify.py MAX_NEW_TOKENS): cheap on any GPU
TOP_LOGPROBS = 5  # alternatives the device reports per step (web-llm allows at most 5)
TIE_FACTOR = 2.0  # a tie: reference top-2 margin ≤ TIE_FACTOR * verify tolerance * max(1, logit scale)


def probe_from_report(report: dict | None, variant_dir: Path) -> dict | None:
    """The manifest's `probe` block from a passing verify report, or None when there is none."""
    if not report or not report.get("passed") or not report.get("steps"):
        return None
    from tokenizers import Tokenizer  # light, but only needed when a library was verified

    tok = Tokenizer.from_file(str(Path(variant_dir) / TOKENIZER_FILE))
    tol = float(report["tolerance"])
    expected = list(report["greedy_token_ids"])[:PROBE_TOKENS]
    # The CPU build stopped (a stop token) within the probe's length: the device must stop there too.
    stops = report.get("finish_reason") == "stop" and len(report["greedy_token_ids"]) < PROBE_TOKENS
    checked = len(expected) + (1 if stops else 0)
    tokens = []
    for i, step in enumerate(report["steps"][:checked]):
        limit = TIE_FACTOR * tol * max(1.0, float(step["scale"]))
        token_id = int(report["raw_greedy_token_ids"][i])
        tokens.append(
            {
                "id": token_id,
                # What web-llm's tokenizer.decode([id]) gives (the same Rust tokenizers library).
                "text": tok.decode([token_id], skip_special_tokens=False),
                "stop": i >= len(expected),
                "tie": float(step["ref_margin"]) <= limit,
                "tolerance": round(limit, 4),
            }
        )
    return {
        "prompt": report["prompt"],
        "prompt_tokens": len(report["prompt_token_ids"]),
        "max_tokens": PROBE_TOKENS,
        "top_logprobs": TOP_LOGPROBS,
        "dtype": report["dtype"],
        "verify_tolerance": tol,
        "tokens": tokens,
        "expected_text": tok.decode(expected, skip_special_tokens=False),
        "rule": (
            "each token must equal the verified CPU build's; at a tie (reference top-2 margin within "
            f"{TIE_FACTOR:g}x the verify tolerance of {tol:g} of the logit range) the device may pick another "
            "token if the expected one is among its top choices within that margin, and the check ends there"
        ),
    }
