"""The quality gate (teacher-forced perplexity of the compiled CPU build vs q0f32) and the float
quantizer it judges, on real builds: the tiny random Llama, and SmolLM2-135M from its Q4_1 GGUF."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from build_pipeline.contract import VERIFY_FILE
from testing.browser_harness.builds import build, smollm2_spec, tiny_spec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _cpu_perplexity(model, quantization: str, out: Path, tokens: int) -> tuple[float, dict]:
    """(perplexity, index metadata) of one variant's compiled CPU (llvm) build, without a WebGPU library."""
    from build_pipeline.stages import quality

    variant = out / quantization
    lib, index, _ = quality.scheme_cpu_build(model, quantization, variant)
    ids = quality.eval_token_ids(variant / "tokenizer.json", tokens)
    return quality.perplexity(lib, variant, ids, quality.WINDOW)["perplexity"], index["metadata"]


def test_float_quantizer_beats_mlc_q4(tmp_path):
    """Same random float weights: the searched asymmetric q4 loses less than MLC's max/7 q4 -- in squared
    weight error and in the compiled CPU build's perplexity vs q0f32."""
    from build_pipeline import float_quantizer
    from build_pipeline.build import load_model
    from build_pipeline.quantization import dequantize_q4, quantize_q4
    from build_pipeline.weight_formats import Q4_MIN, dequantize

    rng = np.random.default_rng(3)
    w = rng.standard_normal((256, 512)) * rng.uniform(0.01, 1, (256, 1)) + rng.normal(0, 0.05, (256, 1))
    w = w.astype(np.float32)
    err_asym = float(np.mean((dequantize(Q4_MIN, float_quantizer.quantize(w, Q4_MIN, "float32")) - w) ** 2))
    err_mlc = float(np.mean((dequantize_q4(*quantize_q4(w, "float32")) - w) ** 2))
    print(f"\nmean squared weight error: asym {err_asym:.3e}, MLC q4 {err_mlc:.3e}")
    assert err_asym < 0.7 * err_mlc

    model = load_model(tiny_spec(tmp_path, quantizations=("q4f32_asym", "q4f32_1", "q0f32")))
    ppl = {q: _cpu_perplexity(model, q, tmp_path / "out", None) for q in ("q0f32", "q4f32_asym", "q4f32_1")}
    ratio = {q: ppl[q][0] / ppl["q0f32"][0] for q in ppl}
    for q, (p, meta) in ppl.items():
        print(f"tiny {q}: perplexity {p:.6g}, ratio {ratio[q]:.4f}, {meta['BitsPerParam']:.2f} bits/param")
    assert ratio["q4f32_asym"] < ratio["q4f32_1"]


def test_failing_gate_leaves_nothing_half_written(tmp_path, capsys):
    """A variant past [quality] max_ratio fails the build with the ratio and the limit named, and no
    variant directory (or half of one) is left behind."""
    from build_pipeline.errors import BuildError

    spec = tiny_spec(tmp_path, max_ratio=1.0001)
    out = tmp_path / "out"
    with pytest.raises(BuildError) as info:
        build(spec, "q4f32_1", out)
    problem = info.value.problem
    assert "quality gate failed" in problem and "limit 1.0001" in problem
    assert "perplexity ratio" in problem
    ratio = float(problem.split("perplexity ratio ")[1].split()[0])
    assert ratio > 1.0001
    left = sorted(p.name for p in (out / "tiny-llama").iterdir()) if (out / "tiny-llama").exists() else []
    assert all(not n.startswith(".q4f32_1") and n != "q4f32_1" for n in left), left


def test_passing_build_records_quality(tmp_path):
    """verify.json and the manifest carry the measured quality; `inspect` prints it."""
    import subprocess
    import sys

    from build_pipeline.manifest import read_manifest

    variant = build(tiny_spec(tmp_path), "q4f32_1", tmp_path / "out")
    quality = json.loads((variant / VERIFY_FILE).read_text())["quality"]
    assert quality["eval_tokens"] == 255 and quality["reference"] == "q0f32"
    # The random model's q4 ratio is well past warn_ratio (1.02): built, with a warning.
    assert quality["status"] == ("warn" if quality["ratio"] > quality["warn_ratio"] else "pass")
    assert quality["ratio"] == pytest.approx(quality["perplexity"] / quality["reference_perplexity"], rel=1e-3)
    manifest = read_manifest(variant)
    assert {k: manifest.quality[k] for k in ("perplexity", "ratio", "eval_tokens")} == {
        k: quality[k] for k in ("perplexity", "ratio", "eval_tokens")
    }
    assert manifest.weight_formats == {"q4g32_mlc": {"weights": 9, "sources": []}}
    shown = subprocess.run(
        [sys.executable, "-m", "build_pipeline", "inspect", str(variant)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert shown.returncode == 0 and "quality: perplexity" in shown.stdout and "x over 255 tokens" in shown.stdout


@pytest.mark.slow
def test_smollm2_default_q4_is_full_quality_and_answers_paris(tmp_path):
    """SmolLM2-135M from its Q4_1 GGUF, the default f32 q4 variant (CPU build): perplexity ratio vs q0f32
    <= 1.001 over the whole evaluation text, and its greedy answer to the France prompt says Paris."""
    from build_pipeline.build import load_model
    from build_pipeline.compiler.library import build_library
    from build_pipeline.compiler.profiles import PROFILES
    from build_pipeline.compiler.verify import CompiledModel, cut_at_stop, prompt_token_ids
    from build_pipeline.quantization import get_scheme
    from build_pipeline.stages import quality
    from build_pipeline.stages.compile import settings_for
    from build_pipeline.tensor_cache import read_formats

    spec = smollm2_spec()
    assert spec.quantizations[0] == "q4f32_asym"
    start = time.monotonic()
    variant = build(spec, "q4f32_asym", tmp_path / "out", compile_library=False)
    model = load_model(spec)
    scheme = get_scheme("q4f32_asym").with_formats(read_formats(variant))
    settings = settings_for(model, PROFILES["gpu"])
    lib, _, _ = build_library(model.family, model.config, scheme, settings, PROFILES["gpu"], "llvm")
    q = quality.measure(model, scheme, variant, lib, settings, PROFILES["gpu"])
    print(
        f"\nSmolLM2-135M q4f32_asym: perplexity {q['perplexity']:.4f} vs q0f32 {q['reference_perplexity']:.4f} "
        f"= {q['ratio']:.5f}x over {q['eval_tokens']} tokens ({time.monotonic() - start:.0f} s)"
    )
    assert q["ratio"] <= 1.001 and q["eval_tokens"] > 2000

    ids, chat, tok = prompt_token_ids(variant)
    raw, _ = CompiledModel(lib, variant).greedy(ids, 16, chat["context_window_size"])
    out, _ = cut_at_stop(raw, set(chat["conv_template"]["stop_token_ids"]), 16)
    text = tok.decode(out, skip_special_tokens=False)
    print(f"France -> {text!r}")
    assert "Paris" in text


@pytest.mark.slow  # ~3.5 min with a cold compile cache (two WebGPU libraries + two CPU builds)
def test_quantized_gguf_builds_losslessly_for_webgpu_and_cpu(tmp_path):
    """A tiny GGUF with Q8_0/Q4_0/Q4_1/Q5_0 tensors (q/k/v of different types fused into one weight):
    q4f32_asym stores every weight in its exact format, the WebGPU libraries compile within the device
    limits, the CPU build passes parity, and its perplexity equals the q0f32 build's."""
    from build_pipeline.manifest import read_manifest
    from testing.browser_harness.builds import tiny_quantized_gguf_spec

    spec = tiny_quantized_gguf_spec(tmp_path, max_ratio=1.0001, eval_tokens=1024)
    variant = build(spec, "q4f32_asym", tmp_path / "out")
    manifest = read_manifest(variant)
    assert manifest.weight_formats == {
        "gguf_q8_0": {"weights": 3, "sources": ["Q8_0"]},  # embedding (tied lm_head) + 2 down_proj
        # fused q/k/v: each part in its own format (one linear per segment)
        "seg:gguf_q4_1*96+gguf_q5_0*32": {"weights": 2, "sources": ["Q4_1", "Q5_0"]},
        "gguf_q4_0": {"weights": 2, "sources": ["Q4_0"]},
        "gguf_q4_1": {"weights": 2, "sources": ["Q4_1"]},
    }
    report = json.loads((variant / VERIFY_FILE).read_text())
    assert report["passed"]
    q = report["quality"]
    print(f"\ntiny GGUF q4f32_asym: ratio {q['ratio']} over {q['eval_tokens']} tokens")
    assert q["ratio"] == pytest.approx(1.0, abs=1e-4) and q["status"] == "pass"
