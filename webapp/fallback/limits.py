"""Bounded, fair load: N generation slots, a wait queue of at most M requests, a cap per client.

A request that finds the queue full, or its client already at its cap of running + queued requests,
is refused at once (429 + Retry-After) instead of piling up threads and memory. When a slot frees,
it goes to the waiting request whose client holds the fewest slots now (first come first served
among equals), so a client that floods the queue cannot make everyone else wait behind all of its
requests. A queued request gives up when its deadline passes, and leaves the queue within
GONE_POLL_SECONDS when its client disconnects. Each admitted request holds one numbered slot (the
engine keeps one llama.cpp context per slot) until its lease is released; a client gets back the
slot it used last when that one is free, so its follow-up turn can reuse its own cached prefix.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

GONE_POLL_SECONDS = 0.1  # how often a queued request checks that its client is still there


class QueueFull(Exception):
    """Every slot and queue place is taken."""

    def __init__(self, retry_after: int):
        super().__init__("queue full")
        self.retry_after = retry_after


class ClientLimit(Exception):
    """This client already has its allowed number of requests running or queued."""

    def __init__(self, retry_after: int, limit: int):
        super().__init__("per-client limit reached")
        self.retry_after = retry_after
        self.limit = limit


class QueueTimeout(Exception):
    def __init__(self, retry_after: int):
        super().__init__("queue wait timed out")
        self.retry_after = retry_after


class ClientLeft(Exception):
    """The client disconnected while its request waited for a slot."""


class Lease:
    """One held slot. `release()` is idempotent: a stream's close and its generator may both call it."""

    def __init__(self, admission: Admission, slot: int, waited: float, client: str = ""):
        self._admission = admission
        self.slot = slot
        self.waited = waited
        self.client = client
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


@dataclass(eq=False)
class _Waiter:
    seq: int
    client: str


class Admission:
    def __init__(self, slots: int, max_queue: int, per_client: int | None = None):
        """`per_client`: most requests (running + queued) one client may have; None = no cap."""
        self.slots = slots
        self.max_queue = max_queue
        self.per_client = per_client
        self._free = list(range(slots))
        self._last_client: dict[int, str] = {}  # slot -> the client that used it last
        self._waiters: list[_Waiter] = []
        self._running: dict[str, int] = {}  # client -> slots held
        self._queued: dict[str, int] = {}  # client -> requests waiting
        self._seq = itertools.count()
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

    def _client_retry_after(self) -> int:
        """Seconds until one of this client's own requests is likely done (then it may send another)."""
        return max(1, min(60, math.ceil(self._avg_hold)))

    def acquire(self, deadline: float, client: str = "", gone: Callable[[], bool] | None = None) -> Lease:
        """A slot for `client`, waiting until `deadline` (time.monotonic()).

        Raises QueueFull (no queue place for anyone), ClientLimit (room, but this client is at its cap),
        QueueTimeout, or ClientLeft (`gone()` said the client disconnected while waiting; it is polled
        every GONE_POLL_SECONDS).
        """
        start = time.monotonic()
        with self._cond:
            must_wait = not self._free or bool(self._waiters)
            if must_wait and len(self._waiters) >= self.max_queue:
                raise QueueFull(self.retry_after())  # full for everyone: that is the reason to give
            held = self._running.get(client, 0) + self._queued.get(client, 0)
            if self.per_client is not None and held >= self.per_client:
                raise ClientLimit(self._client_retry_after(), self.per_client)
            if not must_wait:
                return self._grant(client, 0.0)
            me = _Waiter(next(self._seq), client)
            self._waiters.append(me)
            self._queued[client] = self._queued.get(client, 0) + 1
            try:
                while not (self._free and self._next() is me):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise QueueTimeout(self.retry_after())
                    self._cond.wait(min(remaining, GONE_POLL_SECONDS) if gone is not None else remaining)
                    if gone is not None and gone():
                        raise ClientLeft()
                self._leave(me)
                return self._grant(client, time.monotonic() - start)
            finally:
                if me in self._waiters:
                    self._leave(me)
                self._cond.notify_all()  # another waiter may now be the next in line

    def _next(self) -> _Waiter:
        """The waiter the next free slot goes to: its client holds the fewest slots, then the oldest."""
        return min(self._waiters, key=lambda w: (self._running.get(w.client, 0), w.seq))

    def _leave(self, waiter: _Waiter) -> None:
        self._waiters.remove(waiter)
        left = self._queued[waiter.client] - 1
        if left:
            self._queued[waiter.client] = left
        else:
            del self._queued[waiter.client]

    def _grant(self, client: str, waited: float) -> Lease:
        """Take a free slot for `client`: the one it used last if free, else the oldest free one."""
        slot = next((s for s in self._free if self._last_client.get(s) == client), self._free[0])
        self._free.remove(slot)
        self._last_client[slot] = client
        self._running[client] = self._running.get(client, 0) + 1
        return Lease(self, slot, waited, client)

    def _release(self, lease: Lease) -> None:
        held = time.monotonic() - lease.acquired_at
        with self._cond:
            self._avg_hold = 0.8 * self._avg_hold + 0.2 * held
            self._free.append(lease.slot)
            left = self._running[lease.client] - 1
            if left:
                self._running[lease.client] = left
            else:
                del self._running[lease.client]
            self._cond.notify_all()
