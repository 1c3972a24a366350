"""Periodic upkeep of a cell: purge terminal jobs past retention, compact history.

A long run must stay under etcd's space quota: every commit leaves an old revision of
the touched keys behind until compaction. One housekeeper per cell runs `tick()` on a
schedule (the Ray deployment runs it in its own actor); each step is idempotent, so two
housekeepers racing do no harm. The steps are independent: a purge cut short by an
outage must not also skip the compaction, so each step's store errors are caught and
counted, and the next tick retries (the purge from where its cursor stopped).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .clock import Clock
from .errors import CellError
from .keys import CellKeys
from .retention import RetentionSweep, compact_history
from .store import CellStore


@dataclass
class Housekeeper:
    store: CellStore
    keys: CellKeys
    clock: Clock
    retention_s: float = 3600.0  # how long terminal jobs stay readable
    every_s: float = 60.0
    keep_revisions: int = 10_000  # history kept for watchers that fell behind
    sweep: RetentionSweep = field(default_factory=RetentionSweep)  # bounded purge work per tick
    last_run: float = field(default=float("-inf"))
    purged: int = 0
    compactions: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # step name -> ticks it failed
    last_error: str = ""
    # The most recent purged ids, so an audit can tell "purged on purpose" from "lost".
    recently_purged: deque[str] = field(default_factory=lambda: deque(maxlen=100_000))

    def tick(self) -> bool:
        """Run if due. Returns whether it ran."""
        now = self.clock.now()
        if now - self.last_run < self.every_s:
            return False
        self.last_run = now
        self._step("purge", lambda: self.sweep.step(self.store, self.keys, now, self.retention_s, self._purged))
        self._step("compact", self._compact)
        return True

    def _step(self, name: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except CellError as exc:  # store trouble; anything else is a bug and propagates
            self.failures[name] += 1
            self.last_error = f"{name}: {type(exc).__name__}: {exc}"

    def _purged(self, job_id: str) -> None:
        self.purged += 1
        self.recently_purged.append(job_id)

    def _compact(self) -> None:
        if compact_history(self.store, self.keep_revisions) is not None:
            self.compactions += 1
