"""Quality benchmark (SmolLM2-135M from its Q4_1 GGUF): per variant, bits/param, the quality gate's
perplexity ratio vs q0f32 (compiled CPU build, teacher-forced over build_pipeline/data/eval.txt) and the
CPU build's greedy decode tok/s, all measured in one run (2 shared cores: compare within the run).

In headless Chromium (SwiftShader, the software-adapter library, stock web-llm through the test harness):
decode step time of q4f32_asym (scale + minimum per group) vs MLC's q4f32_1 on the same model, alternating
rounds in one page (target: asym >= 0.95x the speed of q4f32_1; the extra minimum must not cost speed).
LANTERN_BENCH_SKIP_BROWSER=1 skips that part; LANTERN_BENCH_QUANTS= (empty) skips the table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from build_pipeline.contract import MANIFEST_FILE, VERIFY_FILE

QUANTS = tuple(
    q
    for q in os.environ.get("LANTERN_BENCH_QUANTS", "q0f32,q4f32_asym,q4f16_asym,q4f32_1,q4f16_1,q0f16").split(",")
    if q
)
DECODE_STEPS = 32


def measure(model, quant: str, out: Path) -> dict:
    from build_pipeline.compiler.verify import CompiledModel
    from build_pipeline.stages import quality

    variant = out / quant
    lib, index, settings = quality.scheme_cpu_build(model, quant, variant)
    ids = quality.eval_token_ids(variant / "tokenizer.json")
    ppl = quality.perplexity(lib, variant, ids, quality.WINDOW)
    compiled = CompiledModel(lib, variant)
    compiled.greedy(ids[:16], 2, settings.context_window)  # warm up
    start = time.perf_counter()
    compiled.greedy(ids[:16], DECODE_STEPS + 1, settings.context_window)
    decode = DECODE_STEPS / (time.perf_counter() - start)
    return {
        "bits": index["metadata"]["BitsPerParam"],
        "ppl": ppl["perplexity"],
        "tokens": ppl["eval_tokens"],
        "eval_s": ppl["seconds"],
        "decode": decode,
    }


def main() -> None:
    from build_pipeline.build import load_model
    from build_pipeline.model_config import load_model_config
    from build_pipeline.paths import model_configs_dir

    model = load_model(load_model_config(model_configs_dir() / "smollm2-135m-instruct.toml"))
    if QUANTS:
        quality_table(model)
    if not os.environ.get("LANTERN_BENCH_SKIP_BROWSER"):
        ms = browser_decode(model)
        ratio = ms["q4f32_1"] / ms["q4f32_asym"]
        print(
            f"SwiftShader decode step (median of alternating rounds): q4f32_asym {ms['q4f32_asym']:.1f} ms, "
            f"q4f32_1 {ms['q4f32_1']:.1f} ms -> asym speed {ratio:.2f}x of q4f32_1 "
            f"({'meets' if ratio >= 0.95 else 'BELOW'} the 0.95x target)"
        )


def quality_table(model) -> None:
    rows = {}
    with tempfile.TemporaryDirectory(prefix="lantern-quality-bench-") as tmp:
        for q in QUANTS:
            rows[q] = measure(model, q, Path(tmp))
    ref = rows.get("q0f32", {}).get("ppl")
    print(f"{'variant':11s} {'bits/param':>10s} {'perplexity':>11s} {'vs q0f32':>9s} {'CPU decode tok/s':>17s}")
    for q, r in rows.items():
        ratio = f"{r['ppl'] / ref:8.4f}x" if ref else "      n/a"
        print(f"{q:11s} {r['bits']:10.3f} {r['ppl']:11.4f} {ratio} {r['decode']:17.2f}")
    print(
        f"(perplexity over {next(iter(rows.values()))['tokens']} tokens of eval.txt, 512-token windows; "
        "target: the default q4 variant <= 1.001x)"
    )


def browser_decode(model, rounds: int = 3, steps: int = 8) -> dict:
    """Decode step ms of q4f32_asym and q4f32_1 (software-adapter library) in one SwiftShader page."""
    from playwright.sync_api import sync_playwright

    from testing import chromium
    from testing.browser_harness.builds import build
    from testing.browser_harness.server import HarnessServer, harness_page

    greedy = {"temperature": 0, "top_p": 1, "repetition_penalty": 1, "frequency_penalty": 0, "presence_penalty": 0}
    times: dict[str, list[float]] = {"q4f32_asym": [], "q4f32_1": []}
    with tempfile.TemporaryDirectory(prefix="lantern-quality-browser-") as tmp:
        # MLC's q4f32_1 fails the default quality gate (1.48x): here it is built only to be timed, so the
        # gate is widened for this spec alone (and only a tenth of the eval text is read, to save time).
        spec = dataclasses.replace(model.spec, quality={"max_ratio": 2.0, "warn_ratio": 2.0, "eval_tokens": 256})
        variants = {q: build(spec, q, Path(tmp) / q, profile="swiftshader") for q in times}
        with (
            sync_playwright() as pw,
            HarnessServer() as server,
            harness_page(server, chromium.launch(pw), timeout_ms=3_600_000) as page,
        ):
            ids = {}
            for q, variant in variants.items():
                url = server.add(q, variant)
                lib = json.loads((variant / MANIFEST_FILE).read_text())["library"]["file"]
                page.evaluate(
                    "a => window.lantern.load(a)",
                    {"modelId": q, "modelUrl": url, "chatOpts": greedy, "libUrl": f"{url}/resolve/main/{lib}"},
                )
                ids[q] = json.loads((variant / VERIFY_FILE).read_text())["prompt_token_ids"]
            for r in range(rounds):
                for q in list(times) if r % 2 == 0 else list(times)[::-1]:
                    step = page.evaluate(
                        "a => window.lantern.timeDecode(a)", {"ids": ids[q], "steps": steps, "model": q}
                    )
                    times[q].append(step["decodeMs"])
    return {q: statistics.median(v) for q, v in times.items()}


if __name__ == "__main__":
    main()
