"""Llama in a GGUF: llama.cpp's own layout, except that its converter permutes the q/k rows (undone on
import, redone on export)."""

from __future__ import annotations

from build_pipeline.families.interface import GgufLayout

LAYOUT = GgufLayout(permuted_qk=True)
