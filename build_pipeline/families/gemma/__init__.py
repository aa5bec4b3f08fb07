"""Gemma 2 and Gemma 3 families: config, weight map, numpy reference (model.py: the nn.Module)."""

from build_pipeline.families.gemma.config import GemmaConfig, config_from_hf
from build_pipeline.families.gemma.weights import weight_map

__all__ = ["GemmaConfig", "config_from_hf", "create_model", "reference_model", "weight_map"]


def create_model(config: GemmaConfig, scheme, target, context_window: int, prefill_chunk_size: int):
    """The compiled Gemma model (TVM is imported only here: the rest of the pipeline stays light)."""
    from build_pipeline.families.gemma.model import GemmaForCausalLM  # heavy: TVM

    return GemmaForCausalLM(config, scheme, target, context_window, prefill_chunk_size)


def reference_model(config: GemmaConfig, params: dict):
    from build_pipeline.families.gemma.reference import GemmaReference

    return GemmaReference(config, params)
