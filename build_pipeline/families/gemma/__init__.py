"""Gemma 2 and Gemma 3 families: config, weight map, numpy reference (model.py: the nn.Module)."""

from build_pipeline.families.gemma.config import GemmaConfig, config_from_hf
from build_pipeline.families.gemma.weights import weight_map

__all__ = ["GemmaConfig", "config_from_hf", "weight_map"]
