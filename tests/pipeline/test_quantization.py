"""MLC 4-bit group quantization: layout, error bounds, and each scheme's round trip."""

import numpy as np
import pytest

from build_pipeline.convert import dense_params
from build_pipeline.errors import BuildError
from build_pipeline.quantization import SCHEMES, dequantize_q4, get_scheme, quantize_q4


def test_nibble_layout_matches_mlc():
    # One row, one group: values chosen so q = w/scale + 7 is 0..14 in order, then 7s.
    w = np.array([[-7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7] + [0] * 17], dtype=np.float32)
    q_weight, q_scale = quantize_q4(w, "float32")
    assert q_weight.dtype == np.uint32 and q_weight.shape == (1, 4)
    assert q_scale.shape == (1, 1) and q_scale[0, 0] == pytest.approx(1.0)
    first = int(q_weight[0, 0])
    assert [(first >> (4 * r)) & 0xF for r in range(8)] == [0, 1, 2, 3, 4, 5, 6, 7]
    second = int(q_weight[0, 1])
    assert [(second >> (4 * r)) & 0xF for r in range(8)] == [8, 9, 10, 11, 12, 13, 14, 7]


@pytest.mark.parametrize("scale_dtype", ["float16", "float32"])
def test_q4_error_is_at_most_half_a_step(scale_dtype):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((96, 256)) * rng.uniform(0.01, 3, (96, 1))).astype(np.float32)
    q_weight, q_scale = quantize_q4(w, scale_dtype)
    assert q_weight.shape == (96, 32) and q_scale.shape == (96, 8) and str(q_scale.dtype) == scale_dtype
    err = np.abs(dequantize_q4(q_weight, q_scale) - w).reshape(96, 8, 32).max(axis=2)
    step = q_scale.astype(np.float32)
    # Rounding to the nearest level is within half a step; f16 scales add their own rounding.
    slack = 1e-6 if scale_dtype == "float32" else 7 * 2**-11
    assert np.all(err <= step * (0.5 + slack) + 1e-7)
    # ...and the scheme is not trivially lossless.
    assert err.max() > 0


def test_zero_group_dequantizes_to_zero():
    w = np.zeros((2, 64), dtype=np.float32)
    w[1, 32:] = 1.0
    dq = dequantize_q4(*quantize_q4(w, "float32"))
    assert np.array_equal(dq[0], np.zeros(64)) and np.allclose(dq[1, 32:], 1.0)


def test_input_not_multiple_of_group_is_a_clear_error():
    with pytest.raises(BuildError, match="not a multiple of 32"):
        quantize_q4(np.ones((4, 48), dtype=np.float32), "float32")


def test_unknown_scheme_names_the_choices():
    with pytest.raises(BuildError) as info:
        get_scheme("q3f16_0")
    assert "q3f16_0" in info.value.problem and "q4f16_1" in info.value.fix


@pytest.mark.parametrize("name,tol", [("q0f32", 0.0), ("q0f16", 2**-11)])
def test_float_schemes_round_trip(name, tol):
    from build_pipeline.convert import convert
    from build_pipeline.families import get_family
    from build_pipeline.families.llama.config import LlamaConfig
    from testing.tiny_model import hf_config, weights

    scheme = SCHEMES[name]
    cfg = LlamaConfig.from_hf(hf_config())
    w = weights(hf_config())

    class Source:
        origin = "test"
        tensor_names = list(w)
        load = staticmethod(lambda n: w[n])

    out = list(convert(Source, cfg, get_family("llama"), scheme))
    assert all(str(a.dtype) == scheme.dtype for n, a, _ in out)
    dense = dense_params((n, a) for n, a, _ in out)
    qkv = np.concatenate([w[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"])
    got = dense["model.layers.0.self_attn.qkv_proj.weight"]
    assert np.allclose(got, qkv, rtol=tol, atol=2**-24 if tol else 0)  # f16: half an ulp, subnormals absolute
