"""Default locations, shared by the pipeline, the site and the tests (env vars override)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def models_dir() -> Path:
    """Where built variants live: $LANTERN_MODELS_DIR or <repo>/dist/models."""
    return Path(os.environ.get("LANTERN_MODELS_DIR", REPO_ROOT / "dist" / "models"))


def cache_dir() -> Path:
    """Expensive, input-keyed build products (wasm runtime, compiled libraries): $LANTERN_CACHE_DIR or <repo>/.cache."""
    return Path(os.environ.get("LANTERN_CACHE_DIR", REPO_ROOT / ".cache"))


def model_configs_dir() -> Path:
    return REPO_ROOT / "model_configs"
