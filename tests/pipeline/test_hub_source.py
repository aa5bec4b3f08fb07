"""Hub source through huggingface_hub's real snapshot_download, against a local cache with the hub layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from build_pipeline.build import build
from build_pipeline.contract import MANIFEST_FILE
from build_pipeline.model_config import load_model_config
from build_pipeline.sources.hf_folder import NEEDED_FILES
from testing.tiny_model import write_hf_folder

REV = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(home: Path, repo: str) -> Path:
    """$HF_HOME/hub/models--org--name/{snapshots/<rev>/..., refs/main}: what a real download leaves."""
    base = home / "hub" / f"models--{repo.replace('/', '--')}"
    write_hf_folder(base / "snapshots" / REV)
    (base / "snapshots" / REV / "README.md").write_text("not needed by the build")
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(REV)
    return base


def _config(path: Path, repo: str, rev: str = REV) -> Path:
    path.write_text(
        'id = "tiny-hub"\nfamily = "llama"\nlicense = "Apache-2.0"\nquantizations = ["q4f32_1"]\n'
        f'context_window = 256\n\n[source]\ntype = "hub"\nrepo = "{repo}"\nrevision = "{rev}"\n'
    )
    return path


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _hub_cache(tmp_path / "hf", "lantern-test/tiny-llama")
    return tmp_path


def test_build_from_pinned_hub_snapshot(offline_hub):
    spec = load_model_config(_config(offline_hub / "m.toml", "lantern-test/tiny-llama"))
    out = build(spec, offline_hub / "out", compile_library=False)
    assert (out[0] / MANIFEST_FILE).exists()


def test_hub_env_is_honoured_by_the_cli(offline_hub, cli):
    cfg = _config(offline_hub / "m.toml", "lantern-test/tiny-llama")
    r = cli("build", cfg, "--no-compile", "--out", offline_hub / "out")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("repo,rev", [("lantern-test/tiny-llama", "f" * 40), ("lantern-test/absent", REV)])
def test_missing_snapshot_offline_is_a_clear_error(offline_hub, cli, repo, rev):
    r = cli("build", _config(offline_hub / "m.toml", repo, rev), "--no-compile", "--out", offline_hub / "out")
    assert r.returncode == 2
    assert "is not in the local Hugging Face cache" in r.stderr and "HF_HUB_OFFLINE" in r.stderr
    assert not (offline_hub / "out" / "tiny-hub").exists()


def test_only_needed_files_are_requested():
    assert "*.safetensors" in NEEDED_FILES and "tokenizer.json" in NEEDED_FILES
    assert not any(p.endswith((".bin", ".pt", ".onnx", ".gguf", "*")) and p != "*.safetensors" for p in NEEDED_FILES)
