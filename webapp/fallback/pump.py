"""Run a generation in its own thread, so the model never waits for the network.

Streamed unthreaded, each token would be computed, then serialized and written, and only then would
the next one start: every client wakeup and scheduling delay lands on the decode loop. With a pump,
llama.cpp (which releases the GIL) keeps decoding while the request thread writes the previous
pieces. Closing the pump stops the generation and waits until it has stopped, so the engine slot it
used is really free when the lease is released.
"""

from __future__ import annotations

import queue
import threading

_END = object()


class Pump:
    def __init__(self, pieces, name: str = "lantern-fallback-generate", buffer: int = 256):
        self._pieces = pieces
        self._queue: queue.Queue = queue.Queue(buffer)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Queue an item unless the consumer has gone; never blocks forever on a full queue."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for piece in self._pieces:
                if self._stop.is_set() or not self._put(piece):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread, which re-raises it
            self._put(exc)
            return
        finally:
            self._pieces.close()  # in this thread: a generator is closed where it runs
        self._put(_END)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _END:
            self._thread.join()
            raise StopIteration
        if isinstance(item, BaseException):
            self._thread.join()
            raise item
        return item

    def close(self) -> None:
        """Stop generating and wait until the generation thread is done with the engine."""
        self._stop.set()
        self._thread.join()
