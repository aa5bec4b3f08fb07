"""Gemma 2 and Gemma 3 (one package: Gemma 3 is Gemma 2 with q/k norms, its own local rope base and no
soft-caps): config.py (no TVM), weights.py, reference.py (numpy), model.py (nn.Module, TVM)."""
