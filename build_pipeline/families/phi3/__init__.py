"""Phi-3 family (Phi-3.5-mini, Phi-4-mini): config, weight map; the reference is the Llama one."""

from build_pipeline.families.phi3.config import Phi3Config, config_from_hf
from build_pipeline.families.phi3.weights import weight_map

__all__ = ["Phi3Config", "config_from_hf", "weight_map"]
