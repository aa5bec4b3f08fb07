"""How good a built variant is, in words: derived here from the build's measured perplexity ratio, so
the page only displays it (static/js/choose.js never computes quality itself)."""

from __future__ import annotations

# At or below this perplexity ratio vs the unquantized build, a variant is "full quality".
FULL_QUALITY_RATIO = 1.01


def describe(quality: dict | None) -> dict | None:
    """The manifest's `quality` plus what the page shows: `full_quality` and a short `label`."""
    if not quality or not isinstance(quality.get("ratio"), (int, float)):
        return None
    ratio = float(quality["ratio"])
    full = ratio <= FULL_QUALITY_RATIO
    if full:
        label = "full quality"
    else:
        label = f"≈ {max(1, round((ratio - 1) * 100))}% higher perplexity than full precision"
    return {
        "ratio": ratio,
        "perplexity": quality.get("perplexity"),
        "reference_perplexity": quality.get("reference_perplexity"),
        "eval_tokens": quality.get("eval_tokens"),
        "full_quality": full,
        "label": label,
    }
