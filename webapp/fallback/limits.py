"""Bounded load: N generation slots, a FIFO wait queue of at most M requests, and nothing beyond.

A request that finds the queue full is refused at once (429 + Retry-After) instead of piling up
threads and memory; a queued request gives up when its deadline passes. Each admitted request holds
one numbered slot (the engine keeps one llama.cpp context per slot) until its lease is released.
"""

from __future__ import annotations

import collections
import math
import threading
import time


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__("queue full")
        self.retry_after = retry_after


class QueueTimeout(Exception):
    def __init__(self, retry_after: int):
        super().__init__("queue wait timed out")
        self.retry_after = retry_after


class Lease:
    """One held slot. `release()` is idempotent: a stream's close and its generator may both call it."""

    def __init__(self, admission: Admission, slot: int, waited: float):
        self._admission = admission
        self.slot = slot
        self.waited = waited
        self.acquired_at = time.monotonic()
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._admission._release(self)

    @property
    def released(self) -> bool:
        return self._released


class Admission:
    def __init__(self, slots: int, max_queue: int):
        self.slots = slots
        self.max_queue = max_queue
        self._free = list(range(slots))
        self._waiters: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._avg_hold = 5.0  # seconds a slot is typically held (moving average), for Retry-After

    @property
    def active(self) -> int:
        return self.slots - len(self._free)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free for a newcomer, from the recent hold time."""
        turns = (len(self._waiters) + 1) / self.slots
        return max(1, min(60, math.ceil(self._avg_hold * turns)))

    def acquire(self, deadline: float) -> Lease:
        """A slot, waiting in FIFO order until `deadline` (time.monotonic()); raises QueueFull / QueueTimeout."""
        start = time.monotonic()
        with self._cond:
            if self._free and not self._waiters:
                return Lease(self, self._free.pop(0), 0.0)
            if len(self._waiters) >= self.max_queue:
                raise QueueFull(self.retry_after())
            me = object()
            self._waiters.append(me)
            try:
                while not (self._free and self._waiters[0] is me):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise QueueTimeout(self.retry_after())
                    self._cond.wait(remaining)
                self._waiters.popleft()
                return Lease(self, self._free.pop(0), time.monotonic() - start)
            finally:
                if me in self._waiters:
                    self._waiters.remove(me)
                self._cond.notify_all()  # the next waiter may now be at the head

    def _release(self, lease: Lease) -> None:
        held = time.monotonic() - lease.acquired_at
        with self._cond:
            self._avg_hold = 0.8 * self._avg_hold + 0.2 * held
            self._free.append(lease.slot)
            self._cond.notify_all()
