"""Engines get ready once, in a daemon thread, on first use (or at start-up with preload)."""

from __future__ import annotations

import threading


class BackgroundLoad:
    """`start()` runs the subclass's `_load()` once in the background; `state` tells where it is."""

    def __init__(self):
        self.state = "idle"  # idle -> loading -> ready | error
        self.error: str | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def start(self) -> None:
        """Begin loading in the background (idempotent)."""
        with self._lock:
            if self.state != "idle":
                return
            self.state = "loading"
        threading.Thread(target=self._load, name="lantern-fallback-load", daemon=True).start()

    def _load(self) -> None:  # pragma: no cover - subclasses implement it and must set self._done
        raise NotImplementedError
