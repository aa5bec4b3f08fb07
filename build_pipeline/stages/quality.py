"""Stage 6, quality: the quality gate, perplexity of a variant's compiled CPU build vs the unquantized (q0f32) build.

The parity check (verify.py) proves the compiled model computes what the reference computes *on the
variant's own weights*; it cannot see quality lost in quantization. This gate can: it runs the
verified CPU library teacher-forced over a fixed English text shipped in the repo
(build_pipeline/data/eval.txt, the same for every model), in windows of up to WINDOW tokens, through
the CPU build's `prefill_all_logits` (every position's logits, SCORE_ROWS positions per call), and compares the
perplexity with the unquantized (q0f32) model's: the family's numpy reference on the source's float
weights, read one tensor at a time (convert.SourceDenseParams), its figure cached.

Result: `quality = {perplexity, reference_perplexity, ratio, eval_tokens, ...}` in verify.json and the
manifest. Past `max_ratio` (default 1.05) the build fails; past `warn_ratio` (1.02) it warns.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

from build_pipeline.atomic import write_bytes_atomic
from build_pipeline.compiler.library import build_library, log
from build_pipeline.compiler.profiles import PROFILES, resolve_profiles
from build_pipeline.compiler.verify import CompiledModel, cached_report_path, cpu_library_for
from build_pipeline.contract import TOKENIZER_FILE, VERIFY_FILE
from build_pipeline.convert import SourceDenseParams
from build_pipeline.errors import BuildError
from build_pipeline.memory import release_freed_memory
from build_pipeline.paths import cache_dir
from build_pipeline.quantization import get_scheme
from build_pipeline.stages.compile import settings_for
from build_pipeline.stages.shards import write_params

EVAL_TEXT = Path(__file__).resolve().parents[1] / "data" / "eval.txt"
WINDOW = 512
# Positions per prefill call and block of logits (128 x 151,936 float32 = 78 MB): each call dequantizes every
# weight once on the CPU build, so 64 rows spent a fifth of the quality stage dequantizing (Qwen2.5-0.5B).
SCORE_ROWS = 128
DEFAULT_MAX_RATIO = 1.05
DEFAULT_WARN_RATIO = 1.02
REFERENCE_SCHEME = "q0f32"


def gate_variant(model, scheme, variant_dir: Path, report: dict, profile: str | None = None) -> dict | None:
    """The stage: measure a verified variant's quality (unless its verification was reused, quality
    included), record it in verify.json and the verification cache, then judge it. Returns the manifest's
    `quality` figures."""
    if "reused" not in report:
        start = time.monotonic()
        prof = resolve_profiles(profile, scheme)[0]  # the CPU build the verify stage used
        report["quality"] = measure(
            model, scheme, variant_dir, cpu_library_for(variant_dir), settings_for(model, prof), prof
        )
        report["seconds"]["total"] = round(report["seconds"]["total"] + time.monotonic() - start, 2)
        text = json.dumps(report, indent=1, ensure_ascii=False)
        write_bytes_atomic(cached_report_path(report["verification_key"]), text.encode())
        (Path(variant_dir) / VERIFY_FILE).write_text(text)
    q = report.get("quality")
    if not q:
        return None
    judge(q, model.spec.id, scheme.name)
    keys = ("perplexity", "reference_perplexity", "ratio", "eval_tokens", "reference", "status")
    return {k: q[k] for k in keys if k in q}


def eval_token_ids(tokenizer_path: Path, limit: int | None = None) -> list[int]:
    """The evaluation text as plain tokens (no chat template), optionally cut to `limit` tokens."""
    ids = Tokenizer.from_file(str(tokenizer_path)).encode(EVAL_TEXT.read_text()).ids
    return ids[:limit] if limit else ids


def windows(ids: list[int], size: int) -> list[list[int]]:
    """Consecutive non-overlapping windows (each predicts its tokens after the first)."""
    return [ids[i : i + size] for i in range(0, len(ids), size) if len(ids[i : i + size]) > 1]


def block_nll(logits: np.ndarray, targets: list[int], rows: int = 16) -> float:
    """Summed NLL of `targets` given one block of logits (a row each, extra rows ignored), in float64 a few
    rows at a time: float64 temporaries of a 64-row block over a 151,936-token vocabulary are 78 MB each."""
    total = 0.0
    for i in range(0, len(targets), rows):
        block = logits[i : min(i + rows, len(targets))].astype(np.float64)
        top = block.max(axis=1)
        lse = top + np.log(np.exp(block - top[:, None]).sum(axis=1))
        total += float((lse - block[np.arange(len(block)), targets[i : i + len(block)]]).sum())
    return total


def window_score(blocks: Iterable[np.ndarray], win: list[int]) -> float:
    """Summed NLL of win[1:] from consecutive logit blocks over win (positions 0, 1, ...), one block at a time:
    a window's logits over a 151,936-token vocabulary are 311 MB of float32, so they are never held whole."""
    total, start = 0.0, 0
    for block in blocks:
        targets = win[start + 1 : start + 1 + len(block)]
        if targets:
            total += block_nll(block, targets)
        start += len(block)
    return total


def perplexity(lib_path: Path, variant_dir: Path, ids: list[int], window: int) -> dict:
    """Teacher-forced perplexity of a compiled CPU library over `ids` (float64 log-sum-exp)."""
    model = CompiledModel(lib_path, variant_dir)
    context = window  # one window is one sequence: a KV cache for it, not for the whole context (less memory)
    nll, count, start = 0.0, 0, time.monotonic()
    with threadpool_limits(limits=1, user_api="blas"):
        for win in windows(ids, window):
            nll += window_score(model.iter_logits(win, context, SCORE_ROWS), win)
            count += len(win) - 1
    model.close()
    return {
        "perplexity": float(np.exp(nll / count)),
        "eval_tokens": count,
        "seconds": round(time.monotonic() - start, 2),
    }


def reference_model_perplexity(model, ids: list[int], window: int) -> dict:
    """Teacher-forced perplexity of the family's numpy reference on the source's float weights (float64 NLL)."""
    ref = model.family.reference(model.config, SourceDenseParams(model.source, model.config, model.family))
    nll, count, start = 0.0, 0, time.monotonic()
    with threadpool_limits(limits=1, user_api="blas"):
        for win in windows(ids, window):
            ref.reset()
            nll += window_score(ref.logit_blocks(ref.hidden(win[:-1]), SCORE_ROWS), win)
            count += len(win) - 1
            release_freed_memory()  # the window's float32 weights and temporaries, before the next one
    return {
        "perplexity": float(np.exp(nll / count)),
        "eval_tokens": count,
        "seconds": round(time.monotonic() - start, 2),
    }


def _text_digest() -> str:
    return hashlib.sha256(EVAL_TEXT.read_bytes()).hexdigest()[:16]


def reference_perplexity(model, settings, profile, tokenizer_path: Path, ids: list[int], window: int) -> dict:
    """Perplexity of the model's unquantized (q0f32) weights, cached by model, weights, text and code.

    Computed by the numpy reference (reference.py, the yardstick every compiled build is verified against)
    with the weights read from the source one at a time (convert.SourceDenseParams): the q0f32 model is
    never staged, loaded or held whole in float32 (2.5 GB for Qwen2.5-0.5B; peak build memory, issue 12)."""
    package = Path(__file__).resolve().parents[1]
    desc = {
        "config": model.config.to_dict(),
        "source": _source_identity(model.source),
        "text": _text_digest(),
        "tokens": len(ids),
        "window": window,
        "code": [
            hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in (Path(__file__), package / "reference.py", package / "convert.py")
        ],
    }
    key = hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:24]
    cached = cache_dir() / "quality" / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    log(f"quality: {REFERENCE_SCHEME} reference perplexity of {model.spec.id} (numpy, weights streamed)")
    result = reference_model_perplexity(model, ids, window)
    write_bytes_atomic(cached, json.dumps(result).encode())
    return result


def _source_identity(source) -> dict:
    """What identifies the source weights: the file's size and mtime for GGUF, else its origin."""
    path = getattr(source, "gguf_path", None)
    if path:
        st = Path(path).stat()
        return {"gguf": str(path), "bytes": st.st_size, "mtime": int(st.st_mtime)}
    return {"origin": source.origin}


def measure(model, scheme, variant_dir: Path, lib_path: Path, settings, profile) -> dict:
    """The variant's `quality` entry (not yet judged against the limits)."""
    limits = quality_settings(model.spec)
    window = min(WINDOW, settings.context_window)
    tokenizer = Path(variant_dir) / TOKENIZER_FILE
    ids = eval_token_ids(tokenizer, limits["eval_tokens"])
    mine = perplexity(lib_path, Path(variant_dir), ids, window)
    if scheme.name == REFERENCE_SCHEME:
        ref = dict(mine)
    else:
        ref = reference_perplexity(model, settings, profile, tokenizer, ids, window)
    ratio = mine["perplexity"] / ref["perplexity"]
    quality = {
        "perplexity": round(mine["perplexity"], 4),
        "reference_perplexity": round(ref["perplexity"], 4),
        "reference": REFERENCE_SCHEME,
        "ratio": round(ratio, 5),
        "eval_tokens": mine["eval_tokens"],
        "window": window,
        "eval_text": {"path": "build_pipeline/data/eval.txt", "sha256": _text_digest()},
        "max_ratio": limits["max_ratio"],
        "warn_ratio": limits["warn_ratio"],
        "seconds": mine["seconds"],
    }
    ratio_r = quality["ratio"]
    quality["status"] = (
        "fail" if ratio_r > quality["max_ratio"] else "warn" if ratio_r > quality["warn_ratio"] else "pass"
    )
    log(
        f"quality {model.spec.id} {scheme.name}: perplexity {quality['perplexity']:.3f} vs "
        f"{REFERENCE_SCHEME} {quality['reference_perplexity']:.3f} = {ratio:.4f}x over {mine['eval_tokens']} tokens"
    )
    return quality


def scheme_cpu_build(model, scheme_name: str, variant_dir: Path):
    """`scheme_name`'s weights and tokenizer written to `variant_dir` and its CPU (llvm) build compiled, with no
    WebGPU library: what benchmarks and tests measure perplexity and speed on. Returns (lib path, tensor
    index, library settings)."""
    variant_dir.mkdir(parents=True)
    index, formats = write_params(model, get_scheme(scheme_name), variant_dir)
    for name, data in model.source.tokenizer_files.items():
        (variant_dir / name).write_bytes(data)
    scheme = get_scheme(scheme_name).with_formats({b: f["format"] for b, f in formats.items()})
    settings = settings_for(model, PROFILES["gpu"])
    lib, _, _ = build_library(model.family, model.config, scheme, settings, PROFILES["gpu"], "llvm")
    return lib, index, settings


def quality_settings(spec) -> dict:
    """[quality] of a model config: max_ratio, warn_ratio, eval_tokens (None = the whole text)."""
    table = dict(getattr(spec, "quality", None) or {})
    return {
        "max_ratio": float(table.get("max_ratio", DEFAULT_MAX_RATIO)),
        "warn_ratio": float(table.get("warn_ratio", DEFAULT_WARN_RATIO)),
        "eval_tokens": table.get("eval_tokens"),
    }


def judge(quality: dict, model_id: str, scheme_name: str) -> None:
    """Warn past warn_ratio; BuildError past max_ratio (the staged variant is then discarded)."""
    ratio = quality["ratio"]
    if ratio > quality["max_ratio"]:
        raise BuildError(
            f"quality gate failed for {model_id} {scheme_name}: perplexity ratio {ratio:.4f} vs "
            f"{REFERENCE_SCHEME} exceeds the limit {quality['max_ratio']:.4f} "
            f"(perplexity {quality['perplexity']:.3f}, {REFERENCE_SCHEME} {quality['reference_perplexity']:.3f})",
            "use a better quantization (q4f32_asym / q4f16_asym, or q0f16), or raise [quality] max_ratio "
            "in the model config",
        )
    if ratio > quality["warn_ratio"]:
        log(
            f"WARNING: {model_id} {scheme_name} perplexity is {ratio:.4f}x the {REFERENCE_SCHEME} build's "
            f"(warn above {quality['warn_ratio']:.2f}x)"
        )
