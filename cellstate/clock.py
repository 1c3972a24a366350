"""Time, real or simulated.

Leases, retries, think times and everything that waits goes through a Clock, so the
same scheduler and store code runs in wall-clock time or in a deterministic simulation.
"""

from __future__ import annotations

import heapq
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

from .errors import InvalidInputError


class Clock(ABC):
    real_time = False  # whether sleep() blocks: background threads may then keep time too

    @abstractmethod
    def now(self) -> float:
        """Seconds since an arbitrary epoch."""

    @abstractmethod
    def sleep(self, seconds: float) -> None:
        """Wait; in simulated time this advances the clock instead of blocking."""


class RealClock(Clock):
    """Wall-clock seconds: timestamps written to the store (submitted, placed) must
    compare across processes and hosts."""

    real_time = True

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class SimClock(Clock):
    """A manually advanced clock. `sleep` advances it, so simulated runs never block.

    Thread-safe, so one simulated clock can be shared by a store and several
    in-process schedulers driven by a discrete-event loop.
    """

    def __init__(self, start: float = 0.0):
        self._now = start
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, Any]] = []  # items: whatever the event loop scheduled
        self._seq = 0

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise InvalidInputError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)

    def push_timer(self, at: float, item: Any) -> None:
        """Schedule an item for a discrete-event loop; ties break in insertion order."""
        with self._lock:
            self._seq += 1
            heapq.heappush(self._timers, (at, self._seq, item))

    def pop_due(self) -> tuple[float, Any] | None:
        """Pop the earliest timer and advance the clock to it, or None when empty."""
        with self._lock:
            if not self._timers:
                return None
            at, _, item = heapq.heappop(self._timers)
            if at > self._now:
                self._now = at
            return at, item
