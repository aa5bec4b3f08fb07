"""Bad input: one clear message naming the problem and the fix, a non-zero exit, nothing left on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from testing.tiny_model import write_gguf, write_hf_folder, write_model_config


def _leftovers(out: Path) -> list[Path]:
    return sorted(out.rglob("*")) if out.exists() else []


def _assert_clean_failure(result, out: Path, *needles: str):
    assert result.returncode == 2, (result.stdout, result.stderr)
    err = result.stderr
    assert err.startswith("error: ") and "\n  fix: " in err, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert _leftovers(out) == [], _leftovers(out)


@pytest.fixture
def folder(tmp_path):
    return write_hf_folder(tmp_path / "model")


def test_unknown_architecture(tmp_path, folder, cli):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(cfg))
    r = cli("build", write_model_config(tmp_path / "m.toml", folder), "--no-compile", "--out", tmp_path / "out")
    _assert_clean_failure(r, tmp_path / "out", "unknown architecture GPT2LMHeadModel")


def test_unknown_family_in_config(tmp_path, folder, cli):
    r = cli("build", write_model_config(tmp_path / "m.toml", folder, family="gpt2"), "--out", tmp_path / "out")
    _assert_clean_failure(r, tmp_path / "out", "unknown architecture family 'gpt2'", "llama")


def test_missing_safetensors(tmp_path, folder, cli):
    (folder / "model.safetensors").unlink()
    r = cli("build", write_model_config(tmp_path / "m.toml", folder), "--no-compile", "--out", tmp_path / "out")
    _assert_clean_failure(r, tmp_path / "out", "has no *.safetensors weights")


def test_truncated_safetensors(tmp_path, folder, cli):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 1000])
    r = cli("build", write_model_config(tmp_path / "m.toml", folder), "--no-compile", "--out", tmp_path / "out")
    _assert_clean_failure(r, tmp_path / "out", "corrupt or truncated", "download the model again")


def test_truncated_gguf(tmp_path, cli):
    gguf = write_gguf(tmp_path / "tiny.gguf")
    gguf.write_bytes(gguf.read_bytes()[: gguf.stat().st_size // 2])
    cfg = write_model_config(tmp_path / "m.toml", gguf, source_type="gguf")
    r = cli("build", cfg, "--no-compile", "--out", tmp_path / "out")
    _assert_clean_failure(r, tmp_path / "out", "GGUF file", "corrupt or truncated")


def test_missing_tokenizer(tmp_path, folder, cli):
    (folder / "tokenizer.json").unlink()
    r = cli("build", write_model_config(tmp_path / "m.toml", folder), "--no-compile", "--out", tmp_path / "out")
    _assert_clean_failure(r, tmp_path / "out", "has no tokenizer.json")


def test_unsupported_quantization(tmp_path, folder, cli):
    cfg = write_model_config(tmp_path / "m.toml", folder)
    r = cli("build", cfg, "-q", "q3f16_0", "--no-compile", "--out", tmp_path / "out")
    _assert_clean_failure(r, tmp_path / "out", "unsupported quantization 'q3f16_0'", "q4f32_1")


def test_output_dir_not_writable(tmp_path, folder, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = cli("build", write_model_config(tmp_path / "m.toml", folder), "--no-compile", "--out", blocker / "out")
    assert r.returncode == 2 and "is not writable" in r.stderr and "--out" in r.stderr
    assert blocker.read_text() == "not a directory"


def test_failure_midway_keeps_the_previous_build(tmp_path, folder, cli):
    cfg = write_model_config(tmp_path / "m.toml", folder)
    assert cli("build", cfg, "--no-compile", "--out", tmp_path / "out").returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out" / "tiny-llama" / "q4f32_1").iterdir()}
    (folder / "tokenizer.json").unlink()  # now the rebuild fails after the source was opened
    shutil.copy(folder / "config.json", folder / "config.json.bak")
    r = cli("build", cfg, "--no-compile", "--out", tmp_path / "out")
    assert r.returncode == 2
    after = {p.name: p.read_bytes() for p in (tmp_path / "out" / "tiny-llama" / "q4f32_1").iterdir()}
    assert after == before
    assert sorted(p.name for p in (tmp_path / "out" / "tiny-llama").iterdir() if p.is_dir()) == ["q4f32_1"]


def test_weights_not_matching_config(tmp_path, folder, cli):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (folder / "config.json").write_text(json.dumps(cfg))
    r = cli("build", write_model_config(tmp_path / "m.toml", folder), "--no-compile", "--out", tmp_path / "out")
    _assert_clean_failure(r, tmp_path / "out", "gate_up_proj.weight has shape", "config implies")


def test_bad_model_config(tmp_path, cli):
    (tmp_path / "m.toml").write_text('id = "x"\nfamily = "llama"\n')
    r = cli("build", tmp_path / "m.toml", "--out", tmp_path / "out")
    _assert_clean_failure(r, tmp_path / "out", "missing required key `quantizations`")
