"""Llama family (Llama 2/3, SmolLM): config.py (no TVM), weights.py (weight map), model.py (nn.Module, TVM).

Qwen2, Qwen3 and Mistral reuse this model and weight map through config features (`qkv_bias`,
`qk_norm`, `sliding_window`); see their packages and the registry in families/__init__.py."""
