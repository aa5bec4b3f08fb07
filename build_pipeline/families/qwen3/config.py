"""Qwen3 config: a LlamaConfig with per-head q/k RMSNorm (`attention_bias` is false in every release)."""

from __future__ import annotations

from build_pipeline.families.llama.config import LlamaConfig
from build_pipeline.families.qwen2.config import reject_qwen_sliding_window


def config_from_hf(cfg: dict) -> LlamaConfig:
    reject_qwen_sliding_window(cfg, "Qwen3")
    return LlamaConfig.from_hf(cfg, qk_norm=True, qkv_bias=bool(cfg.get("attention_bias", False)), family="qwen3")
