"""Qwen2 family: the Llama model and weight map with `qkv_bias` (a bias on the fused q/k/v projection).

Only the config differs (config.py); the registry pairs it with llama's weights.py and model.py."""
