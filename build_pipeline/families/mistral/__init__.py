"""Mistral family: the Llama model and weight map with a sliding attention window (`sliding_window`).

Only the config differs (config.py); the registry pairs it with llama's weights.py and model.py."""
