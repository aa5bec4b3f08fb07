"""Qwen2 config: a LlamaConfig with the q/k/v bias; Qwen's own sliding-window switch is refused."""

from __future__ import annotations

from build_pipeline.errors import BuildError
from build_pipeline.families.llama.config import LlamaConfig


def reject_qwen_sliding_window(cfg: dict, family: str) -> None:
    """Qwen checkpoints carry a `sliding_window` that only applies when `use_sliding_window` is set."""
    if cfg.get("use_sliding_window"):
        raise BuildError(
            f"{family} sliding-window attention (use_sliding_window=true) is not supported",
            "use a checkpoint with use_sliding_window=false (all Qwen2.5 / Qwen3 instruct models)",
        )


def config_from_hf(cfg: dict) -> LlamaConfig:
    reject_qwen_sliding_window(cfg, "Qwen2")
    return LlamaConfig.from_hf(cfg, qkv_bias=True, family="qwen2")
