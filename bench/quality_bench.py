"""Quality benchmark (SmolLM2-135M from its Q4_1 GGUF): per variant, bits/param, the quality gate's
perplexity ratio vs q0f32 (compiled CPU build, teacher-forced over build_pipeline/data/eval.txt) and the
CPU build's greedy decode tok/s, all measured in one run (2 shared cores: compare within the run).

Not measured here: decode speed in Chromium (SwiftShader) of q4f32_asym vs q4f32_1 (compile_bench.py
builds and runs the default variant in the browser).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

QUANTS = tuple(q for q in os.environ.get(
    "LANTERN_BENCH_QUANTS", "q0f32,q4f32_asym,q4f16_asym,q4f32_1,q4f16_1,q0f16").split(",") if q)
DECODE_STEPS = 32


def measure(model, quant: str, out: Path) -> dict:
    from build_pipeline.build import write_params
    from build_pipeline.compiler import PROFILES, build_library, quality, settings_for
    from build_pipeline.compiler.verify import CompiledModel
    from build_pipeline.quantization import get_scheme

    variant = out / quant
    variant.mkdir(parents=True)
    index, formats = write_params(model, get_scheme(quant), variant)
    for name, data in model.source.tokenizer_files.items():
        (variant / name).write_bytes(data)
    scheme = get_scheme(quant).with_formats({b: f["format"] for b, f in formats.items()})
    settings = settings_for(model, PROFILES["gpu"])
    lib, _, _ = build_library(model.family, model.config, scheme, settings, PROFILES["gpu"], "llvm")
    ids = quality.eval_token_ids(variant / "tokenizer.json")
    ppl = quality.perplexity(lib, variant, ids, quality.WINDOW)
    compiled = CompiledModel(lib, variant)
    compiled.greedy(ids[:16], 2, settings.context_window)  # warm up
    start = time.perf_counter()
    compiled.greedy(ids[:16], DECODE_STEPS + 1, settings.context_window)
    decode = DECODE_STEPS / (time.perf_counter() - start)
    return {"bits": index["metadata"]["BitsPerParam"], "ppl": ppl["perplexity"], "tokens": ppl["eval_tokens"],
            "eval_s": ppl["seconds"], "decode": decode}


def main() -> None:
    from build_pipeline.build import load_model
    from build_pipeline.model_config import load_model_config
    from build_pipeline.paths import model_configs_dir

    model = load_model(load_model_config(model_configs_dir() / "smollm2-135m-instruct.toml"))
    rows = {}
    with tempfile.TemporaryDirectory(prefix="lantern-quality-bench-") as tmp:
        for q in QUANTS:
            rows[q] = measure(model, q, Path(tmp))
    ref = rows.get("q0f32", {}).get("ppl")
    print(f"{'variant':11s} {'bits/param':>10s} {'perplexity':>11s} {'vs q0f32':>9s} {'CPU decode tok/s':>17s}")
    for q, r in rows.items():
        ratio = f"{r['ppl'] / ref:8.4f}x" if ref else "      n/a"
        print(f"{q:11s} {r['bits']:10.3f} {r['ppl']:11.4f} {ratio} {r['decode']:17.2f}")
    print(f"(perplexity over {next(iter(rows.values()))['tokens']} tokens of eval.txt, 512-token windows; "
          "target: the default q4 variant <= 1.001x)")


if __name__ == "__main__":
    main()
