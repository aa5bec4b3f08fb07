"""Issue 19: a model at Llama-3.2-1B's real shapes (128,256-token vocabulary, 16 layers of 2048/8192, GQA 32/8,
Llama-3 RoPE, llama.cpp's Q4_K_M type mix; random weights: testing/real_shapes.py) goes through the
pipeline's weight path in a child process: its download stays at the GGUF's size, every buffer fits
WebGPU's default limits, and the build's peak memory stays within 2x the largest float32 tensor above a
baseline process. (Compiling, verifying and gating it for WebGPU is `python -m bench scale`: minutes more.)"""

from __future__ import annotations

import sys

import pytest

from build_pipeline import stage_log
from build_pipeline.contract import WEBLLM_DEVICE_FLOOR
from build_pipeline.manifest import read_manifest
from testing import real_shapes

pytestmark = pytest.mark.slow


def test_llama_32_1b_shapes_download_at_gguf_size_within_default_limits_and_memory(tmp_path):
    shape = real_shapes.LLAMA_32_1B
    gguf = real_shapes.write_gguf(tmp_path / "llama-3.2-1b.gguf", shape)
    spec = real_shapes.model_spec(gguf, shape, ("q4f16_asym",))
    _, baseline, _, _ = stage_log.run_child([sys.executable, "-c", stage_log.BASELINE])
    args = [sys.executable, "-m", "build_pipeline", "build", "--source-file", str(gguf), "--no-compile"]
    seconds, rss, code, err = stage_log.run_child(
        [*args, "-q", "q4f16_asym", "--out", str(tmp_path / "out"), str(spec.path)]
    )
    assert code == 0, err[-2000:]
    manifest = read_manifest(tmp_path / "out" / spec.id / "q4f16_asym")
    gguf_bytes = gguf.stat().st_size
    ratio = manifest.download_bytes / gguf_bytes
    largest_fp32 = shape.vocab * shape.hidden * 4
    above = rss - baseline
    limits = manifest.required_limits
    print(
        f"\nLlama-3.2-1B shapes ({shape.params() / 1e9:.2f} B params): GGUF {gguf_bytes / 1e6:.0f} MB, download "
        f"{manifest.download_bytes / 1e6:.0f} MB = {ratio:.3f}x; build {seconds:.0f} s, peak {rss:.0f} MB "
        f"({above:.0f} above the {baseline:.0f} MB baseline = {above / (2 * largest_fp32 / 2**20):.2f}x the "
        f"target); largest binding {limits['maxStorageBufferBindingSize'] / 2**20:.1f} MiB"
    )
    assert ratio <= 1.03
    assert limits["maxStorageBufferBindingSize"] <= WEBLLM_DEVICE_FLOOR["maxStorageBufferBindingSize"]
    assert limits["maxBufferSize"] <= WEBLLM_DEVICE_FLOOR["maxBufferSize"]
    assert above <= 2 * largest_fp32 / 2**20
