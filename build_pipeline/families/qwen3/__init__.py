"""Qwen3 family: the Llama model and weight map with `qk_norm` (per-head RMSNorm of q and k), no bias.

Only the config differs (config.py); the registry pairs it with llama's weights.py and model.py."""
