"""Mistral config: a LlamaConfig with `sliding_window` (null in Mistral-7B v0.2 and later)."""

from __future__ import annotations

from build_pipeline.families.llama.config import LlamaConfig


def config_from_hf(cfg: dict) -> LlamaConfig:
    window = cfg.get("sliding_window")
    return LlamaConfig.from_hf(cfg, sliding_window=int(window) if window else None, family="mistral")
