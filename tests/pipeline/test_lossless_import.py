"""Lossless GGUF import: quantized tensors written with the `gguf` writer come out of the compiled CPU
kernel exactly as `gguf.quants.dequantize` decodes them, stored at the GGUF's own size (issue 19)."""

import numpy as np
import pytest

from build_pipeline import gguf_import
from build_pipeline.weight_formats import dequantize, get_format

ROWS, COLS = 32, 256
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
SIMPLE = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
# GGUF bits per weight of each block type.
GGUF_BPW = {"Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625}


def _write_gguf(path, rng):
    """One tensor per type: the simple types via gguf's own quantizer, K-quants as random blocks."""
    import gguf
    from gguf import GGMLQuantizationType as T

    writer = gguf.GGUFWriter(str(path), "llama")
    for name in SIMPLE:
        x = (rng.standard_normal((ROWS, COLS)) * 0.05 + rng.uniform(-0.02, 0.02, (ROWS, 1))).astype(np.float32)
        x[0, :32] = 0  # an all-zero block (d = 0)
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
            # some negative, zero and subnormal f16 scales: the kernels' f16 decoding must handle them
            blocks[0, off : off + 2] = np.array([-3e-3], np.float16).view(np.uint8)
            blocks[1, off : off + 2] = np.array([0.0], np.float16).view(np.uint8)
            blocks[2, off : off + 2] = np.array([3e-6], np.float16).view(np.uint8)
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


def _cpu_kernel_weights(fmt, stored, rows=ROWS):
    """The weight as the CPU build's linear kernel computes with it: y = I @ W^T with the CPU schedule."""
    import tvm
    from tvm import te, tirx

    from build_pipeline.compiler.cpu_schedule import schedule_linear
    from build_pipeline.nn.layers import linear_te

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
    out = tvm.runtime.tensor(np.zeros((1, COLS, rows), np.float32), dev)
    lib["main"](tvm.runtime.tensor(eye, dev), *[tvm.runtime.tensor(a, dev) for a in stored], out)
    return out.numpy()[0].T


def _same(got, values):
    # Bit for bit; `+ 0` only equates -0.0 with +0.0 ((q - 8) * d vs q * d - 8 * d).
    return np.array_equal((got + np.float32(0)).view(np.uint32), (values + np.float32(0)).view(np.uint32))


@pytest.mark.parametrize("type_name", [*SIMPLE, *BLOCK_BYTES])
def test_compiled_kernel_reproduces_gguf_bit_for_bit(imported, type_name):
    values, item = imported[type_name]
    assert item.fmt.name == f"gguf_{type_name.lower()}" and item.source_type == type_name
    stored = item.stored("float32")
    assert all(a.dtype == np.uint32 for a in stored)  # the same tensors for f16 and f32 variants
    assert all(np.array_equal(a, b) for a, b in zip(stored, item.stored("float16"), strict=True))
    assert _same(dequantize(item.fmt, stored), values)
    assert _same(_cpu_kernel_weights(item.fmt, stored), values)


def _stored_bytes(item):
    return sum(a.nbytes for a in item.stored())


@pytest.mark.parametrize("type_name", [*SIMPLE, *BLOCK_BYTES])
def test_stored_bytes_at_the_gguf_size(imported, type_name):
    values, item = imported[type_name]
    ratio = _stored_bytes(item) / (values.size * GGUF_BPW[type_name] / 8)
    print(f"\n{type_name}: {8 * _stored_bytes(item) / values.size:.4f} bits/weight, {ratio:.4f}x the GGUF")
    assert ratio <= 1.03


def test_fused_tensors_of_mixed_types_stay_exact_and_small(imported):
    """Q4_K q/k with a Q6_K v (as in Q4_K_M files): each part keeps its own format (a segmented weight),
    exact through numpy and the compiled kernel, at the GGUF's size."""
    types = ["Q4_K", "Q4_K", "Q6_K", "Q5_0"]
    parts = [imported[t] for t in types]
    values = np.concatenate([v for v, _ in parts])
    joined = gguf_import.join_rows([i for _, i in parts], values)
    assert joined.fmt.name == "seg:gguf_q4_k*64+gguf_q6_k*32+gguf_q5_0*32"
    assert get_format(joined.fmt.name) == joined.fmt
    stored = joined.stored("float32")
    assert _same(dequantize(joined.fmt, stored), values)
    gguf_bytes = sum(v.size * GGUF_BPW[t] / 8 for (v, _), t in zip(parts, types, strict=True))
    ratio = _stored_bytes(joined) / gguf_bytes
    print(f"\nmixed fused q/k/v: {ratio:.4f}x the GGUF")
    assert ratio <= 1.03
    # The compiled model runs one linear per segment (layers.apply_linear) and concatenates them.
    got, i = [], 0
    for f, rows in joined.fmt.segments:
        n = len(f.tensor_suffixes())
        got.append(_cpu_kernel_weights(f, stored[i : i + n], rows=rows))
        i += n
    assert _same(np.concatenate(got), values)


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
        "gguf_q8_0": {"weights": 1, "sources": ["Q8_0"]},
        "gguf_q4_1": {"weights": 120, "sources": ["Q4_1"]},
    }
    bits = 8 * stored / params
    print(f"\nSmolLM2-135M q4f16_asym: {bits:.3f} bits/param (the Q4_1/Q8_0 GGUF itself: ~5.75)")
    assert bits < 5.8


def test_kernel_f16_decoding_is_exact_for_every_finite_half():
    """The kernels decode f16 scale bits with integer ops + reinterpret (no shader-f16): every finite f16,
    zeros and subnormals included, comes out as numpy's exact float32."""
    import tvm
    from tvm import te

    from build_pipeline.nn.layers import f16_bits_to_f32

    bits = np.arange(1 << 16, dtype=np.uint32)
    bits = bits[(bits & 0x7C00) != 0x7C00]  # GGUF scales are finite: no inf / nan
    h = te.placeholder((len(bits),), "uint32", name="h")
    out = te.compute((len(bits),), lambda i: f16_bits_to_f32(h[i]), name="decode")
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([h, out])}), target="llvm")
    dev = tvm.cpu()
    res = tvm.runtime.tensor(np.zeros(len(bits), np.float32), dev)
    lib["main"](tvm.runtime.tensor(bits, dev), res)
    want = bits.astype(np.uint16).view(np.float16).astype(np.float32)
    assert np.array_equal(res.numpy().view(np.uint32), want.view(np.uint32))


def test_a_weight_larger_than_one_binding_is_split_into_row_blocks(imported):
    """A weight whose stored tensors exceed WebGPU's binding size (here a small limit standing in for
    128 MiB) becomes row blocks of its own format, the mixed q/k/v segments too: same bytes, same values
    through numpy, through the compiled per-block linears and through the embedding's row lookup."""
    import tvm
    from tvm import te

    from build_pipeline.nn.layers import _weight_elem
    from build_pipeline.weight_formats import split_rows

    values, item = imported["Q8_0"]
    stored = item.stored()
    limit = 4096  # q_weight is 256 bytes a row: 16 rows per block
    fmt, parts = split_rows(item.fmt, stored, limit)
    assert fmt.name == "seg:gguf_q8_0*16+gguf_q8_0*16" and get_format(fmt.name) == fmt
    assert max(p.nbytes for p in parts) <= limit
    assert sum(p.nbytes for p in parts) == sum(s.nbytes for s in stored)
    assert _same(dequantize(fmt, parts), values)
    got, i = [], 0
    for f, rows in fmt.segments:
        n = len(f.tensor_suffixes())
        got.append(_cpu_kernel_weights(f, parts[i : i + n], rows=rows))
        i += n
    assert _same(np.concatenate(got), values)
    # The embedding reads any row through the segment that holds it (layers.QuantEmbedding).
    ids = te.placeholder((ROWS,), "int32", name="ids")
    params = [te.placeholder(a.shape, "uint32", name=f"p{i}") for i, a in enumerate(parts)]
    emb = te.compute((ROWS, COLS), lambda r, c: _weight_elem(fmt, params, ids[r], c), name="embedding")
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([ids, *params, emb])}), target="llvm")
    dev = tvm.cpu()
    order = np.random.default_rng(3).permutation(ROWS).astype(np.int32)
    out = tvm.runtime.tensor(np.zeros((ROWS, COLS), np.float32), dev)
    lib["main"](tvm.runtime.tensor(order, dev), *[tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in parts], out)
    assert _same(out.numpy(), values[order])
    # Segments of a mixed fused weight are split in turn; small ones are left as they are.
    pair = [imported[t] for t in ("Q4_K", "Q6_K")]
    mixed = gguf_import.join_rows([i for _, i in pair], np.concatenate([v for v, _ in pair]))
    fmt2, _ = split_rows(mixed.fmt, mixed.stored(), 2000)
    assert [f.name for f, _ in fmt2.segments][:1] == ["gguf_q4_k"] and len(fmt2.segments) > 2
    assert split_rows(item.fmt, stored, 1 << 27) == (item.fmt, stored)
