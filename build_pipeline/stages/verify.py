"""Stage 5, verify: the compiled model computes what the reference computes, on the variant's own weights.

The CPU (llvm) build of the same nn.Module, relax pipeline and logit functions as the WebGPU libraries
(compiler/library.py) runs web-llm's prefill + greedy decode through the paged KV cache, against the
numpy reference (compiler/verify.py has the mechanics). A parity failure raises BuildError, so nothing
is published; the report goes to verify.json beside the variant.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from build_pipeline.compiler.library import build_library, log
from build_pipeline.compiler.profiles import resolve_profiles
from build_pipeline.compiler.verify import MAX_NEW_TOKENS, PROMPT, cached_report_path, judge, run_parity
from build_pipeline.contract import CHAT_CONFIG_FILE, TENSOR_CACHE_FILE, TOKENIZER_FILE, VERIFY_FILE
from build_pipeline.errors import BuildError
from build_pipeline.paths import cache_dir
from build_pipeline.stages.compile import settings_for
from build_pipeline.stages.quality import quality_settings
from build_pipeline.tensor_cache import file_sha256, read_index

PKG = Path(__file__).resolve().parents[1]


def verify_libraries(model, scheme, variant_dir: Path, libraries: list[dict], profile: str | None = None) -> dict:
    """The stage: verify the variant and mark each library's manifest entry with the summary."""
    start = time.monotonic()
    # One CPU build checks the model; the profiles differ only in how GPU kernels are scheduled.
    prof = resolve_profiles(profile, scheme)[0]
    report = verify_variant(
        model,
        scheme,
        Path(variant_dir),
        settings_for(model, prof),
        prof,
        webgpu_key="+".join(lib["cache_key"] for lib in libraries),
    )
    summary = {k: report[k] for k in ("passed", "summary", "max_abs_diff", "argmax_agreement")}
    summary["reused"] = "reused" in report
    for entry in libraries:
        entry["verify"] = summary
        entry["seconds"] = round(entry["seconds"] + time.monotonic() - start, 2)  # compile + verify
    return report


def verification_key(
    variant_dir: Path, cpu_key: str, webgpu_key: str | None, model_config: dict, model_spec=None
) -> str:
    """Hash of everything a verification result depends on: both libraries (their cache keys cover
    config, quantization, settings and compiler sources), the shards, chat config, tokenizer, and the
    verification + reference code itself."""
    variant_dir = Path(variant_dir)
    shards = [r.get("sha256") or file_sha256(variant_dir / r["dataPath"]) for r in read_index(variant_dir)["records"]]
    desc = {
        "cpu": cpu_key,
        "webgpu": webgpu_key,
        "config": model_config,
        "shards": shards,
        "index": file_sha256(variant_dir / TENSOR_CACHE_FILE),
        "chat": file_sha256(variant_dir / CHAT_CONFIG_FILE),
        "tokenizer": file_sha256(variant_dir / TOKENIZER_FILE),
        "code": [
            file_sha256(p)
            for p in (
                PKG / "compiler" / "verify.py",
                PKG / "stages" / "verify.py",
                PKG / "reference.py",
                PKG / "convert.py",
                PKG / "quantization.py",
                PKG / "weight_formats.py",
                PKG / "stages" / "quality.py",
                PKG / "data" / "eval.txt",
            )
        ],
        "quality": quality_settings(model_spec) if model_spec is not None else None,
        "prompt": PROMPT,
        "steps": MAX_NEW_TOKENS,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def verify_variant(model, scheme, variant_dir: Path, settings, profile, webgpu_key: str | None = None) -> dict:
    """Compile (or reuse) the CPU library, run the parity check, write verify.json; BuildError on failure.

    A passing result (with its quality figures, added by the quality stage) is cached under its
    verification_key: rebuilding identical inputs reuses it (marked `reused` in verify.json) instead of
    re-running the check. LANTERN_REVERIFY=1 forces a fresh run."""
    start = time.monotonic()
    lib, info, from_cache = build_library(model.family, model.config, scheme, settings, profile, "llvm")
    key = verification_key(variant_dir, info["key"], webgpu_key, model.config.to_dict(), model.spec)
    cached = cached_report_path(key)
    if cached.is_file() and not os.environ.get("LANTERN_REVERIFY"):
        report = json.loads(cached.read_text())
        report["reused"] = {"verification_key": key, "original_seconds": report["seconds"]}
        report["seconds"] = {"total": round(time.monotonic() - start, 2)}
        (Path(variant_dir) / VERIFY_FILE).write_text(json.dumps(report, indent=1, ensure_ascii=False))
        log(f"verify {model.spec.id} {scheme.name}: identical inputs already verified; {report['summary']}")
        return report
    report = judge(run_parity(model, scheme, variant_dir, lib, settings.context_window))
    report["target"] = "llvm"
    report["verification_key"] = key
    report["cpu_library"] = {
        "cache_key": info["key"],
        "from_cache": from_cache,
        "compile_seconds": info.get("total_seconds"),
    }
    report["seconds"]["total"] = round(time.monotonic() - start, 2)
    text = json.dumps(report, indent=1, ensure_ascii=False)
    (Path(variant_dir) / VERIFY_FILE).write_text(text)
    log(f"verify {model.spec.id} {scheme.name}: {report['summary']}")
    if not report["passed"]:
        # The staged variant dir is discarded on error: keep the evidence in the cache dir.
        kept = cache_dir() / "verify-failures" / f"{model.spec.id}-{scheme.name}-{int(time.time())}.json"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(text)
        raise BuildError(
            f"build verification failed for {model.spec.id} {scheme.name}: {report['summary']}",
            f"the compiled model does not compute what the reference computes (a compiler bug); "
            f"per-step numbers are in {kept}",
        )
    return report
