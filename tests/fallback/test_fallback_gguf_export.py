"""The per-model server GGUF: GGUF sources are reused as is, Hugging Face sources are exported with the
`gguf` writer, and llama.cpp computes the same model from the export as the numpy reference does."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from build_pipeline.build import build, load_model
from build_pipeline.contract import MANIFEST_FILE, SERVER_GGUF_FILE, SERVER_GGUF_SIDECAR
from build_pipeline.errors import BuildError
from build_pipeline.gguf_export import pre_tokenizer_name, server_gguf_path, write_server_gguf
from build_pipeline.model_config import load_model_config
from testing.tiny_model import write_hf_folder, write_model_config

TOKENS = [5, 80, 90, 100, 7, 260, 12, 263, 40, 41]  # ids in the tiny vocabulary (265 tokens)


def llama_logits(path, tokens=TOKENS) -> np.ndarray:
    from webapp.fallback.engine_worker import load_llama

    llm = load_llama(str(path), 64, 1, logits_all=True)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)])
    finally:
        llm.close()


def reference_logits(model, tokens=TOKENS) -> np.ndarray:
    params = {
        p.name: np.concatenate([model.source.load(s) for s in p.sources], axis=0)
        for p in model.family.weight_map(model.config)
    }
    return model.family.reference(model.config, params).forward(tokens)


def tiny(tmp_path, tie=True, qkv_bias=False, family=None, hf_extra=None, **config):
    family = family or ("qwen2" if qkv_bias else "llama")
    hf = write_hf_folder(tmp_path / "hf", tie=tie, qkv_bias=qkv_bias, family=family, **(hf_extra or {}))
    return load_model(load_model_config(write_model_config(tmp_path / "tiny.toml", hf, family=family, **config)))


@pytest.mark.parametrize(
    "tie,qkv_bias,family,hf_extra",
    [
        (True, False, None, None),
        (False, False, None, None),
        (True, True, None, None),
        (True, False, "qwen3", None),
        (True, False, "mistral", {"sliding_window": 256}),  # the window covers the whole context: never applies
    ],
    ids=["llama-tied", "llama-untied", "qwen2-bias", "qwen3-qk-norm", "mistral-window-past-context"],
)
def test_f32_export_computes_the_reference_model(tmp_path, tie, qkv_bias, family, hf_extra):
    model = tiny(tmp_path, tie, qkv_bias, family, hf_extra)
    entry = write_server_gguf(model, tmp_path / "out", "F32")
    assert entry["origin"] == "export" and entry["type"] == "F32" and entry["path"] == f"../{SERVER_GGUF_FILE}"
    ours, ref = llama_logits(tmp_path / "out" / SERVER_GGUF_FILE), reference_logits(model)
    # llama.cpp keeps its KV cache in f16: ~0.2% of the logit range, where a wrong layout is ~100%.
    assert np.abs(ours - ref).max() < 5e-3 * np.abs(ref).max()


def test_mistral_window_inside_the_context_has_no_server_gguf(tmp_path):
    """llama.cpp runs Mistral as GGUF arch `llama`, without the window: exporting would serve another model."""
    model = tiny(tmp_path, family="mistral", hf_extra={"sliding_window": 24}, prefill_chunk_size=16)
    with pytest.raises(BuildError, match="sliding window of 24 tokens"):
        write_server_gguf(model, tmp_path / "out", "F32")
    assert not (tmp_path / "out" / SERVER_GGUF_FILE).exists()


def test_f32_export_equals_a_hand_written_gguf(tmp_path, tiny_gguf):
    model = tiny(tmp_path)
    write_server_gguf(model, tmp_path / "out", "F32")
    assert np.array_equal(llama_logits(tmp_path / "out" / SERVER_GGUF_FILE), llama_logits(tiny_gguf))


def test_q8_0_export(tmp_path):
    import gguf

    model = tiny(tmp_path, tie=False)
    entry = write_server_gguf(model, tmp_path / "out")
    path = tmp_path / "out" / SERVER_GGUF_FILE
    assert entry["type"] == "Q8_0" and entry["bytes"] == path.stat().st_size
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    assert types["token_embd.weight"] == types["output.weight"] == types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == "F32"
    ref, ours = reference_logits(model), llama_logits(path)
    # 8-bit weights (and llama.cpp's 8-bit activations): small error relative to the logit spread.
    assert np.abs(ours - ref).mean() < 0.05 * np.abs(ref).mean()
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.8


def test_build_writes_one_gguf_per_model_and_lists_it(tmp_path):
    hf = write_hf_folder(tmp_path / "hf")
    spec = load_model_config(write_model_config(tmp_path / "tiny.toml", hf, quantizations=("q4f32_1", "q0f32")))
    out = tmp_path / "models"
    build(spec, out, compile_library=False)
    gguf_file = server_gguf_path(out / spec.id)
    assert gguf_file.is_file()
    from build_pipeline.tensor_cache import file_sha256

    for quant in ("q4f32_1", "q0f32"):
        manifest = json.loads((out / spec.id / quant / MANIFEST_FILE).read_text())
        entry = manifest["server_gguf"]
        assert (out / spec.id / quant / entry["path"]).resolve() == gguf_file.resolve()
        assert entry["sha256"] == file_sha256(gguf_file) and entry["bytes"] == gguf_file.stat().st_size
        assert SERVER_GGUF_FILE not in {f["path"] for f in manifest["files"]}  # never part of the browser download
    before = gguf_file.stat()
    build(spec, out, ["q4f32_1"], compile_library=False)  # unchanged source: the GGUF is reused
    assert gguf_file.stat().st_mtime_ns == before.st_mtime_ns and gguf_file.stat().st_ino == before.st_ino
    assert build(spec, out, compile_library=False, if_missing=True) == []
    assert not [p for p in (out / spec.id).iterdir() if p.name.startswith(".")]  # no temp files left


def test_gguf_source_is_reused_not_converted(tmp_path, tiny_gguf):
    spec = load_model_config(write_model_config(tmp_path / "tiny.toml", tiny_gguf, source_type="gguf"))
    out = tmp_path / "models"
    build(spec, out, compile_library=False)
    served = server_gguf_path(out / spec.id)
    assert served.read_bytes() == tiny_gguf.read_bytes()
    same_fs = os.stat(tiny_gguf).st_dev == os.stat(out).st_dev
    if same_fs:
        assert os.path.samefile(served, tiny_gguf)  # a hardlink: no second copy on disk
    manifest = json.loads((out / spec.id / "q4f32_1" / MANIFEST_FILE).read_text())
    assert manifest["server_gguf"]["origin"] == "source" and manifest["server_gguf"]["type"] == "F32"
    # If the missing GGUF is all that is missing, --if-missing still makes it.
    served.unlink()
    (out / spec.id / SERVER_GGUF_SIDECAR).unlink()
    build(spec, out, compile_library=False, if_missing=True)
    assert served.is_file()


def test_unsupported_tokenizer_skips_the_gguf_but_not_the_build(tmp_path, capsys):
    hf = write_hf_folder(tmp_path / "hf")
    tok = json.loads((hf / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁"}
    (hf / "tokenizer.json").write_text(json.dumps(tok))
    spec = load_model_config(write_model_config(tmp_path / "tiny.toml", hf))
    with pytest.raises(BuildError, match="pre-tokenizer"):
        write_server_gguf(load_model(spec), tmp_path / "direct")
    assert not list((tmp_path / "direct").iterdir())  # nothing half-written
    out = tmp_path / "models"
    build(spec, out, compile_library=False)
    assert "no server fallback GGUF" in capsys.readouterr().err
    assert json.loads((out / spec.id / "q4f32_1" / MANIFEST_FILE).read_text())["server_gguf"] is None
    assert not server_gguf_path(out / spec.id).exists()


def test_tokenizer_check_refuses_a_gguf_that_splits_text_differently(tmp_path, monkeypatch):
    import gguf

    real = gguf.GGUFWriter.add_token_merges
    monkeypatch.setattr(gguf.GGUFWriter, "add_token_merges", lambda self, merges: real(self, merges[:1]))
    with pytest.raises(BuildError, match="tokenizes"):
        write_server_gguf(tiny(tmp_path), tmp_path / "out")
    assert not server_gguf_path(tmp_path / "out").exists() and not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "pre,name",
    [
        ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": True},
                    {"type": "ByteLevel", "use_regex": True},
                ],
            },
            "smollm",
        ),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {"Regex": r"(?i:'s|'t)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"},
                        "behavior": "Isolated",
                    },
                    {"type": "ByteLevel", "use_regex": False},
                ],
            },
            "qwen2",
        ),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {"Regex": r"(?i:'s|'t)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s]+"},
                        "behavior": "Isolated",
                    },
                    {"type": "ByteLevel", "use_regex": False},
                ],
            },
            "llama-bpe",
        ),
    ],
)
def test_pre_tokenizer_names(pre, name):
    assert pre_tokenizer_name({"pre_tokenizer": pre}) == name


@pytest.mark.slow
def test_smollm2_round_trip_through_a_hugging_face_folder(tmp_path, smollm2_gguf):
    """SmolLM2's weights as an HF folder, exported to Q8_0 (its tokenizer passes the llama.cpp check):
    llama.cpp computes nearly the same next-token distributions as on the original Q4_1 GGUF."""
    from testing.tiny_model import write_safetensors

    original = load_model(
        load_model_config(
            write_model_config(
                tmp_path / "gguf.toml",
                smollm2_gguf,
                source_type="gguf",
                model_id="smol-gguf",
                context_window=2048,
                prefill_chunk_size=512,
            )
        )
    )
    hf = tmp_path / "hf"
    hf.mkdir()
    write_safetensors(hf / "model.safetensors", {n: original.source.load(n) for n in original.source.tensor_names})
    (hf / "config.json").write_text(json.dumps(original.source.hf_config))
    for name, data in original.source.tokenizer_files.items():
        (hf / name).write_bytes(data)
    exported = load_model(
        load_model_config(
            write_model_config(
                tmp_path / "hf.toml", hf, model_id="smol-hf", context_window=2048, prefill_chunk_size=512
            )
        )
    )
    write_server_gguf(exported, tmp_path / "out")
    from llama_cpp import Llama

    prompt = Llama(str(smollm2_gguf), vocab_only=True, verbose=False).tokenize(
        b"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", False, True
    )
    a, b = llama_logits(smollm2_gguf, prompt), llama_logits(tmp_path / "out" / SERVER_GGUF_FILE, prompt)
    # Q4_1 values re-quantized to Q8_0 are not bit-identical; a wrong layout would not correlate at all.
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.995
    pa, pb = (np.exp(x - x.max(-1, keepdims=True)) for x in (a, b))
    pa, pb = pa / pa.sum(-1, keepdims=True), pb / pb.sum(-1, keepdims=True)
    assert np.abs(pa - pb).sum(-1).max() < 0.25
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.75
