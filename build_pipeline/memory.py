"""Hand freed heap memory back to the operating system (peak build memory, issue 12).

A compiled model's weights are hundreds of small and mid-sized allocations; after they are freed,
glibc keeps most of them in its heap (its mmap threshold grows to 32 MB after the first large free), so
the next stage (the numpy reference, the quality gate) would stack its own peak on top of memory nobody
uses. malloc_trim(0) returns those free pages; elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_freed_memory() -> None:
    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return
    libc = ctypes.CDLL(name)
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
