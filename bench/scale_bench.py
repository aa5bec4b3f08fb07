"""Real-size models (issue 19): what a 1-4B model costs the pipeline and the browser, measured on synthetic
GGUFs at the real shapes, vocabularies and Q4_K_M type mixes (testing/real_shapes.py).

Per model and variant, each built in a child process (`python -m build_pipeline build --source-file`):
download bytes vs the GGUF's, wall time and peak RSS per stage (LANTERN_STAGE_LOG) and the peak above a
baseline child that only imports the pipeline and TVM, against the target of 2x the largest float32
tensor; the largest storage binding against WebGPU's default 128 MB; verify and the quality gate's
perplexity ratio (1.000 for a lossless import). Then, unless LANTERN_BENCH_SKIP_BROWSER=1, the q4f32 build
through stock web-llm in headless Chromium (SwiftShader): load time, prefill and decode tok/s, and whether its
greedy tokens equal the CPU build's (8 for the 1-1.5B shapes, 2 for 3-4B).

    python -m bench scale                      # Llama-3.2-1B and Qwen2.5-1.5B shapes
    LANTERN_SCALE_MODELS=all python -m bench scale   # + Llama-3.2-3B and Phi-3.5-mini (hours on 2 cores)
    LANTERN_SCALE_MODELS=llama-3.2-1b LANTERN_SCALE_QUANTS=q4f32_asym python -m bench scale  # one of each
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.support import cli, swiftshader_run
from build_pipeline import stage_log
from build_pipeline.contract import MANIFEST_FILE, VERIFY_FILE
from build_pipeline.manifest import read_manifest
from testing import real_shapes

DEFAULT_MODELS = ("llama-3.2-1b", "qwen2.5-1.5b")
SPEC_DEFAULT_BINDING = 128 * 1024**2  # WebGPU maxStorageBufferBindingSize without requested limits
QUANTS = ("q4f32_asym", "q4f16_asym")


def build_model(shape: real_shapes.RealShape, work: Path, quants: tuple[str, ...]) -> dict:
    gguf = work / f"{shape.name}.gguf"
    start = time.perf_counter()
    real_shapes.write_gguf(gguf, shape)
    spec = real_shapes.model_spec(gguf, shape, quants)
    largest_fp32 = shape.vocab * shape.hidden * 4
    out = {
        "params": shape.params(),
        "gguf_bytes": gguf.stat().st_size,
        "gguf_write_s": time.perf_counter() - start,
        "limit_mb": 2 * largest_fp32 / 2**20,
        "variants": {},
    }
    for q in quants:
        seconds, rss, code, err = stage_log.run_child(
            [
                sys.executable,
                "-m",
                "build_pipeline",
                "build",
                "--source-file",
                str(gguf),
                "-q",
                q,
                "--out",
                str(work / "out"),
                str(spec.path),
            ]
        )
        row: dict = {"seconds": seconds, "rss_mb": rss, "stages": stage_log.parse(err)}
        if code != 0:
            row["failed"] = err.strip().splitlines()[-3:]
            out["variants"][q] = row
            continue
        variant = work / "out" / spec.id / q
        m = read_manifest(variant)
        report = json.loads((variant / VERIFY_FILE).read_text())
        row.update(
            download_bytes=m.download_bytes,
            bits=m.bits_per_param,
            ratio=(m.quality or {}).get("ratio"),
            verify=report.get("passed"),
            binding=m.required_limits.get("maxStorageBufferBindingSize"),
        )
        out["variants"][q] = row
    f32 = work / "out" / spec.id / "q4f32_asym"
    if (f32 / MANIFEST_FILE).is_file() and not os.environ.get("LANTERN_BENCH_SKIP_BROWSER"):
        # >= 8 greedy tokens for the 1-1.5B shapes, 2 for the 3-4B ones (SwiftShader takes seconds a token).
        steps = 8 if shape.params() < 2e9 else 2
        try:
            out["swiftshader"] = swiftshader_greedy(f32, steps)
        except Exception as exc:  # noqa: BLE001 - a load failure is a result to report (e.g. a device limit)
            out["swiftshader"] = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return out


def swiftshader_greedy(variant: Path, steps: int) -> dict:
    """The q4f32 build in SwiftShader with only the spec-default limits its manifest asks for: load time,
    prefill and decode speed, and whether its first `steps` greedy tokens equal the verified CPU build's
    (verify.json) on the verification prompt."""
    run = swiftshader_run(variant, steps - 1)
    expected = json.loads((variant / VERIFY_FILE).read_text())["raw_greedy_token_ids"][:steps]
    return {
        "load_s": run["load_s"],
        "prefill_tok_s": run["prompt_tokens"] / (run["prefill_ms"] / 1000),
        "decode_tok_s": 1000 / run["decode_ms"] if steps > 1 else None,
        "tokens": run["tokens"],
        "equal": run["tokens"] == expected,
        "limits": run["manifest"].required_limits,
    }


def run() -> dict:
    names = os.environ.get("LANTERN_SCALE_MODELS", ",".join(DEFAULT_MODELS))
    names = list(real_shapes.SHAPES) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    quants = tuple(q for q in os.environ.get("LANTERN_SCALE_QUANTS", ",".join(QUANTS)).split(",") if q)
    _, baseline, _, _ = stage_log.run_child([sys.executable, "-c", stage_log.BASELINE])
    results: dict = {"baseline_rss_mb": baseline, "models": {}}
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"lantern-scale-{name}-") as tmp:
            results["models"][name] = build_model(real_shapes.SHAPES[name], Path(tmp), quants)
    return results


def report(r: dict) -> None:
    base = r["baseline_rss_mb"]
    print(f"baseline child RSS {base:.0f} MB; WebGPU default binding limit {SPEC_DEFAULT_BINDING / 1e6:.0f} MB")
    for name, m in r["models"].items():
        print(
            f"{name}: {m['params'] / 1e9:.2f} B params, GGUF {m['gguf_bytes'] / 1e6:.0f} MB "
            f"(written in {m['gguf_write_s']:.0f} s); peak target {m['limit_mb']:.0f} MB above baseline"
        )
        for q, v in m["variants"].items():
            stages = ", ".join(f"{s} {sec:.0f} s/{mb:.0f} MB" for s, sec, mb in v["stages"])
            above = v["rss_mb"] - base
            if "failed" in v:
                print(f"  {q}: FAILED after {v['seconds']:.0f} s ({stages}): {' | '.join(v['failed'])}")
                continue
            binding = v.get("binding")
            print(
                f"  {q}: download {v['download_bytes'] / 1e6:.0f} MB = {v['download_bytes'] / m['gguf_bytes']:.3f}x "
                f"the GGUF; build {v['seconds']:.0f} s, peak RSS {v['rss_mb']:.0f} MB ({above:.0f} above baseline, "
                f"{above / m['limit_mb']:.2f}x the target); verify {'PASS' if v['verify'] else 'FAIL'}; perplexity "
                f"ratio {v['ratio']}; largest binding "
                + (
                    f"{binding / 1e6:.0f} MB ({'within' if binding <= SPEC_DEFAULT_BINDING else 'OVER'} the default)"
                    if binding
                    else "n/a"
                )
            )
            print(f"    stages: {stages}")
        s = m.get("swiftshader")
        if s:
            if "failed" in s:
                print(f"  SwiftShader q4f32: FAILED {s['failed']}")
                continue
            decode = f"{s['decode_tok_s']:.2f} tok/s" if s["decode_tok_s"] else "n/a"
            print(
                f"  SwiftShader q4f32 (limits {s['limits']}): load {s['load_s']:.0f} s, prefill "
                f"{s['prefill_tok_s']:.2f} tok/s, decode {decode}; {len(s['tokens'])} greedy tokens "
                + ("equal the CPU build's" if s["equal"] else f"DIFFER from the CPU build's: {s['tokens']}")
            )


def main(argv=None) -> None:
    cli("python -m bench.scale_bench", run, report, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
