"""Phi-3 family (Phi-3.5-mini, Phi-4-mini): config.py (no TVM), weights.py, reference.py (numpy),
model.py (the Llama nn.Module with in-layer partial longrope; TVM)."""
