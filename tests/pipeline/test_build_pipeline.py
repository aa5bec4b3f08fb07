"""End-to-end builds of a tiny random Llama from every source kind: shards, hashes, offsets, manifest."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from build_pipeline.build import build
from build_pipeline.contract import CHAT_CONFIG_FILE, MANIFEST_FILE, TENSOR_CACHE_FILE
from build_pipeline.convert import dense_params
from build_pipeline.inspect_model import inspect_variant
from build_pipeline.model_config import load_model_config
from build_pipeline.quantization import dequantize_q4, quantize_q4
from build_pipeline.tensor_cache import iter_tensors
from testing.tiny_model import hf_config, weights, write_hf_folder, write_model_config

ALL = ("q4f32_1", "q4f16_1", "q0f32", "q0f16")


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory, tiny_hf):
    root = tmp_path_factory.mktemp("build")
    spec = load_model_config(write_model_config(root / "tiny.toml", tiny_hf, quantizations=ALL))
    build(spec, root / "out", compile_library=False)
    return root / "out" / "tiny-llama"


def test_every_variant_is_complete_and_nothing_else_is_left(tiny_build):
    assert sorted(p.name for p in tiny_build.iterdir() if p.is_dir()) == sorted(ALL)
    for q in ALL:
        names = {p.name for p in (tiny_build / q).iterdir()}
        assert {TENSOR_CACHE_FILE, CHAT_CONFIG_FILE, "tokenizer.json", MANIFEST_FILE} <= names
    assert not [p for p in tiny_build.parent.rglob(".*tmp-*")]


@pytest.mark.parametrize("quant", ALL)
def test_shard_bytes_offsets_and_hashes(tiny_build, quant):
    d = tiny_build / quant
    index = json.loads((d / TENSOR_CACHE_FILE).read_text())
    for shard in index["records"]:
        data = (d / shard["dataPath"]).read_bytes()
        assert len(data) == shard["nbytes"] and shard["format"] == "raw-shard"
        assert hashlib.md5(data).hexdigest() == shard["md5sum"]
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        offset = 0
        for rec in shard["records"]:
            assert rec["byteOffset"] == offset and rec["format"] == "raw"
            itemsize = np.dtype(rec["dtype"]).itemsize
            assert rec["nbytes"] == int(np.prod(rec["shape"])) * itemsize
            assert rec["nbytes"] % 4 == 0  # WebGPU buffer writes need 4-byte multiples
            offset += rec["nbytes"]
        assert offset == shard["nbytes"]


def test_q4_shards_hold_exactly_the_quantized_source(tiny_build):
    w = weights(hf_config())
    tensors = dict(iter_tensors(tiny_build / "q4f32_1"))
    gate_up = np.concatenate([w["model.layers.1.mlp.gate_proj.weight"], w["model.layers.1.mlp.up_proj.weight"]])
    q, s = quantize_q4(gate_up, "float32")
    assert np.array_equal(tensors["model.layers.1.mlp.gate_up_proj.q_weight"], q)
    assert np.array_equal(tensors["model.layers.1.mlp.gate_up_proj.q_scale"], s)
    assert tensors["model.layers.1.mlp.gate_up_proj.q_weight"].shape == (256, 8)
    # Norms stay unquantized in the model dtype; f16 variant stores f16 scales.
    assert tensors["model.norm.weight"].dtype == np.float32
    f16 = dict(iter_tensors(tiny_build / "q4f16_1"))
    assert f16["model.norm.weight"].dtype == np.float16
    assert f16["model.embed_tokens.q_scale"].dtype == np.float16
    assert "lm_head.q_weight" not in tensors  # tied embeddings: no separate head


def test_manifest_describes_the_files_on_disk(tiny_build):
    for q in ALL:
        d = tiny_build / q
        m = json.loads((d / MANIFEST_FILE).read_text())
        assert m["id"] == f"tiny-llama-{q}" and m["quantization"] == q and m["library"] is None
        on_disk = {p.name for p in d.iterdir()} - {MANIFEST_FILE}
        assert {f["path"] for f in m["files"]} == on_disk
        for f in m["files"]:
            data = (d / f["path"]).read_bytes()
            assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
        assert m["download_bytes"] == sum(f["bytes"] for f in m["files"])
        assert m["required_features"] == (["shader-f16"] if "f16" in q else [])
        assert m["required_limits"]["maxStorageBuffersPerShaderStage"] == 10
        assert m["estimated_gpu_memory_bytes"] > m["download_bytes"] // 2
        assert inspect_variant(d).ok


def test_bits_per_param_per_scheme(tiny_build):
    bits = {q: json.loads((tiny_build / q / MANIFEST_FILE).read_text())["bits_per_param"] for q in ALL}
    assert bits["q0f32"] == 32 and bits["q0f16"] == 16
    # 4 bits + one scale per 32 weights (norms are a rounding error at this size).
    assert 4.5 <= bits["q4f16_1"] <= 4.6 and 5.0 <= bits["q4f32_1"] <= 5.1


def test_gguf_and_hf_folder_give_identical_variants(tmp_path, tiny_hf, tiny_gguf):
    """The tiny GGUF stores q/k in llama.cpp's permuted row order: this fails if un-permuting is skipped."""
    outs = {}
    for kind, src in (("hf-folder", tiny_hf), ("gguf", tiny_gguf)):
        cfg = write_model_config(tmp_path / f"{kind}.toml", src, source_type=kind, model_id=f"tiny-{kind}")
        build(load_model_config(cfg), tmp_path / "out", compile_library=False)
        outs[kind] = dict(iter_tensors(tmp_path / "out" / f"tiny-{kind}" / "q4f32_1"))
    assert outs["gguf"].keys() == outs["hf-folder"].keys()
    for name in outs["gguf"]:
        assert np.array_equal(outs["gguf"][name], outs["hf-folder"][name]), name


def test_rebuild_replaces_a_variant_atomically(tmp_path, tiny_hf):
    cfg = load_model_config(write_model_config(tmp_path / "t.toml", tiny_hf))
    first = build(cfg, tmp_path / "out", compile_library=False)[0]
    marker = first / "stale-file"
    marker.write_text("from an older build")
    build(cfg, tmp_path / "out", compile_library=False)
    assert not marker.exists() and (first / MANIFEST_FILE).exists()
    assert sorted(p.name for p in (tmp_path / "out" / "tiny-llama").iterdir() if p.is_dir()) == ["q4f32_1"]


def test_if_missing_skips_built_variants(tmp_path, tiny_hf, cli):
    cfg = write_model_config(tmp_path / "t.toml", tiny_hf)
    first = cli("build", cfg, "--no-compile", "--out", tmp_path / "out")
    assert first.returncode == 0, first.stderr
    again = cli("build", cfg, "--no-compile", "--if-missing", "--out", tmp_path / "out")
    assert again.returncode == 0 and "already built" in again.stdout


def test_cli_list_and_inspect(tmp_path, tiny_hf, cli):
    configs = tmp_path / "configs"
    configs.mkdir()
    write_model_config(configs / "tiny.toml", tiny_hf, quantizations=("q4f32_1", "q0f32"))
    assert (
        cli("build", configs / "tiny.toml", "-q", "q4f32_1", "--no-compile", "--out", tmp_path / "out").returncode == 0
    )
    listing = cli("list", "--configs", configs, "--out", tmp_path / "out")
    assert listing.returncode == 0
    assert "tiny-llama" in listing.stdout and "q0f32     not built" in listing.stdout
    assert "q4f32_1   built" in listing.stdout and "bits/param" in listing.stdout
    ok = cli("inspect", tmp_path / "out" / "tiny-llama")
    assert ok.returncode == 0 and "hashes: all" in ok.stdout and "valid" in ok.stdout
    # Flip one byte of a shard: inspect must notice and fail.
    shard = tmp_path / "out" / "tiny-llama" / "q4f32_1" / "params_shard_0.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = cli("inspect", tmp_path / "out" / "tiny-llama" / "q4f32_1")
    assert bad.returncode == 1 and "params_shard_0.bin: sha256 mismatch" in bad.stdout


def test_qwen2_family_keeps_qkv_bias(tmp_path):
    src = write_hf_folder(tmp_path / "qwen", qkv_bias=True)
    cfg = write_model_config(tmp_path / "q.toml", src, family="qwen2", model_id="tiny-qwen")
    build(load_model_config(cfg), tmp_path / "out", compile_library=False)
    dense = dense_params(iter_tensors(tmp_path / "out" / "tiny-qwen" / "q4f32_1"))
    w = weights(hf_config(qkv_bias=True))
    bias = np.concatenate([w[f"model.layers.0.self_attn.{p}_proj.bias"] for p in "qkv"])
    assert np.array_equal(dense["model.layers.0.self_attn.qkv_proj.bias"], bias)
    chat = json.loads((tmp_path / "out" / "tiny-qwen" / "q4f32_1" / CHAT_CONFIG_FILE).read_text())
    assert chat["model_type"] == "qwen2" and chat["model_config"]["qkv_bias"] is True


def test_dequantized_weights_stay_close(tiny_build):
    w = weights(hf_config())
    dense = dense_params(iter_tensors(tiny_build / "q4f32_1"))
    ref = w["model.layers.0.mlp.down_proj.weight"]
    got = dense["model.layers.0.mlp.down_proj.weight"]
    q, s = quantize_q4(ref, "float32")
    assert np.array_equal(got, dequantize_q4(q, s))
    assert np.abs(got - ref).max() <= np.abs(ref).max() / 14 + 1e-6
