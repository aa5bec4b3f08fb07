"""Lossless GGUF import: quantized tensors written with the `gguf` writer come out of the compiled CPU
kernel exactly as `gguf.quants.dequantize` decodes them (f32 scales), and f16 scales stay close."""

import numpy as np
import pytest

from build_pipeline import gguf_import
from build_pipeline.weight_formats import dequantize

ROWS, COLS = 32, 256
BLOCK_BYTES = {"Q4_K": 144, "Q6_K": 210}


def _write_gguf(path, rng):
    """One tensor per type: the simple types via gguf's own quantizer, K-quants as random blocks."""
    import gguf
    from gguf import GGMLQuantizationType as T

    writer = gguf.GGUFWriter(str(path), "llama")
    for name in ("Q4_0", "Q4_1", "Q5_0", "Q8_0"):
        x = (rng.standard_normal((ROWS, COLS)) * 0.05 + rng.uniform(-0.02, 0.02, (ROWS, 1))).astype(np.float32)
        q = gguf.quants.quantize(x, T[name])
        writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=T[name])
    for name, size in BLOCK_BYTES.items():  # gguf-py cannot quantize K-quants: any bytes are valid blocks
        raw = rng.integers(0, 256, (ROWS, COLS // 256 * size), dtype=np.uint8)
        blocks = raw.reshape(-1, size)
        scales = [208] if name == "Q6_K" else [0, 2]  # d (and dmin): keep them finite
        for off in scales:
            blocks[:, off : off + 2] = (
                rng.uniform(1e-3, 1e-2, len(blocks)).astype(np.float16).view(np.uint8).reshape(-1, 2)
            )
        writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=T[name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    import gguf

    path = tmp_path_factory.mktemp("quants") / "q.gguf"
    _write_gguf(path, np.random.default_rng(7))
    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = (values, gguf_import.import_tensor(t.name, np.asarray(t.data).reshape(ROWS, -1), values))
    return out


def _cpu_kernel_weights(fmt, stored):
    """The weight as the CPU build's linear kernel computes with it: y = I @ W^T with the CPU schedule."""
    import tvm
    from tvm import te, tirx

    from build_pipeline.compiler.cpu_schedule import schedule_linear
    from build_pipeline.compiler.layers import linear_te

    seq = tirx.Var("seq_len", "int64")
    x = te.placeholder((1, seq, COLS), "float32", name="x")
    params = [te.placeholder(a.shape, str(a.dtype), name=f"p{i}") for i, a in enumerate(stored)]
    y = linear_te(fmt, COLS, "float32", False)(x, *params)
    func = te.create_prim_func([x, *params, y])
    scheduled = schedule_linear(func)
    assert scheduled is not None, "the CPU build's linear schedule did not apply"
    lib = tvm.compile(tvm.IRModule({"main": scheduled}), target="llvm")
    dev = tvm.cpu()
    eye = np.eye(COLS, dtype=np.float32)[None]
    out = tvm.runtime.tensor(np.zeros((1, COLS, ROWS), np.float32), dev)
    lib["main"](tvm.runtime.tensor(eye, dev), *[tvm.runtime.tensor(a, dev) for a in stored], out)
    return out.numpy()[0].T


@pytest.mark.parametrize(
    "type_name,fmt",
    [
        ("Q4_0", "q4g32_sym"),
        ("Q4_1", "q4g32_min"),
        ("Q4_K", "q4g32_min"),
        ("Q5_0", "q8g32_sym"),
        ("Q6_K", "q8g16_sym"),
        ("Q8_0", "q8g32_sym"),
    ],
)
def test_compiled_kernel_reproduces_gguf_bit_for_bit(imported, type_name, fmt):
    values, item = imported[type_name]
    assert item.fmt.name == fmt and item.source_type == type_name
    got = _cpu_kernel_weights(item.fmt, item.stored("float32"))
    # Bit for bit; `+ 0` only equates -0.0 with +0.0 ((q - 8) * d vs q * d - 8 * d).
    assert np.array_equal((got + np.float32(0)).view(np.uint32), (values + np.float32(0)).view(np.uint32))
    f16 = dequantize(item.fmt, item.stored("float16"))
    err = float(np.abs(f16 - values).max() / np.abs(values).max())
    print(f"\n{type_name} -> {fmt}: f32 scales exact; f16 scales max error {err:.2e} of max|w|")
    if type_name in ("Q4_0", "Q4_1", "Q5_0", "Q8_0"):
        assert err == 0  # their scales (and minimums) are f16 numbers already
    else:
        assert err < 1e-3  # K-quant sub-block scales d*sc round once to f16


def test_fused_tensors_of_mixed_types_stay_exact(imported):
    """Q4_K q/k with a Q6_K v (as in Q4_K_M files) fuse into one 8-bit tensor with groups of 16."""
    parts = [imported["Q4_K"], imported["Q6_K"], imported["Q8_0"]]
    values = np.concatenate([v for v, _ in parts])
    joined = gguf_import.join_rows([i for _, i in parts], values)
    assert joined.fmt.name == "q8g16_min"
    got = dequantize(joined.fmt, joined.stored("float32"))
    assert np.array_equal(got + np.float32(0), values + np.float32(0))


def test_smollm2_gguf_imports_losslessly(smollm2_gguf):
    """The default model's Q4_1 linears and Q8_0 embedding keep their exact values (checked inside)."""
    from build_pipeline.convert import convert
    from build_pipeline.families import get_family
    from build_pipeline.manifest import format_summary
    from build_pipeline.quantization import SCHEMES
    from build_pipeline.sources.gguf_file import open_gguf

    source = open_gguf(smollm2_gguf)
    llama = get_family("llama")
    config = llama.config_from_hf(source.hf_config)
    formats, stored, params = {}, 0, 0
    for _, arr, count in convert(source, config, llama, SCHEMES["q4f16_asym"], formats):
        stored += arr.nbytes
        params += count
    summary = format_summary(formats)
    assert summary == {
        "q8g32_sym": {"weights": 1, "sources": ["Q8_0"]},
        "q4g32_min": {"weights": 120, "sources": ["Q4_1"]},
    }
    bits = 8 * stored / params
    print(f"\nSmolLM2-135M q4f16_asym: {bits:.3f} bits/param (the Q4_1/Q8_0 GGUF itself: ~5.75)")
    assert bits < 5.8
