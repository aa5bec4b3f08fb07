"""Qwen2 family: the Llama architecture with a bias on the fused q/k/v projection."""

from __future__ import annotations

from build_pipeline.families.llama import LlamaConfig, Param, weight_map  # noqa: F401  (same layout)
# The compiled model is the Llama nn.Module; config.qkv_bias adds the bias on the fused q/k/v projection.
from build_pipeline.families.llama import create_model  # noqa: F401


def config_from_hf(cfg: dict) -> LlamaConfig:
    if cfg.get("use_sliding_window"):
        from build_pipeline.errors import BuildError

        raise BuildError(
            "Qwen2 sliding-window attention is not supported",
            "use a Qwen2 checkpoint with use_sliding_window=false (all Qwen2.5 instruct models)",
        )
    return LlamaConfig.from_hf(cfg, qkv_bias=True, family="qwen2")
