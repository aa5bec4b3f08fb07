"""Engines get ready once, in a daemon thread, on first use (or at start-up with preload)."""

from __future__ import annotations

import threading


class BackgroundLoad:
    """`start()` runs the subclass's `_load()` once in the background; `state` tells where it is."""

    def __init__(self) -> None:
        self._state = "idle"  # idle -> loading -> ready | error
        self._error: str | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def start(self) -> None:
        """Begin loading in the background (idempotent)."""
        with self._lock:
            if self._state != "idle":
                return
            self._state = "loading"
        threading.Thread(target=self._load, name="lantern-fallback-load", daemon=True).start()

    @property
    def state(self) -> str:
        return self._state

    @property
    def error(self) -> str | None:
        return self._error

    def _load(self) -> None:  # pragma: no cover - subclasses implement it and must set self._done
        raise NotImplementedError
