"""Bounded build memory (issue 12): large float32 weights assembled a block of rows at a time, and freed
heap memory handed back to the operating system.

A compiled model's weights are hundreds of small and mid-sized allocations; after they are freed,
glibc keeps most of them in its heap (its mmap threshold grows to 32 MB after the first large free), so
the next stage (the numpy reference, the quality gate) would stack its own peak on top of memory nobody
uses. malloc_trim(0) returns those free pages; elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

import numpy as np


def release_freed_memory() -> None:
    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return
    libc = ctypes.CDLL(name)
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def rows_in_blocks(rows: int, step: int, block: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """One float32 array of `rows` rows from `block(start, stop)`, `step` rows at a time: dequantizing a
    151,936-row embedding at once makes float temporaries several times its size."""
    out: np.ndarray | None = None
    for start in range(0, rows, step):
        part = block(start, min(start + step, rows))
        if out is None:
            out = np.empty((rows, *part.shape[1:]), dtype=np.float32)
        out[start : start + len(part)] = part
    if out is None:
        raise ValueError("rows_in_blocks needs at least one row")
    return out
