"""Periodic upkeep of a cell: purge finished jobs past retention, compact history.

A long run must stay under etcd's space quota: every commit leaves an old revision of
the touched keys behind until compaction. One housekeeper per cell runs `tick()` on a
schedule (the Ray deployment runs it in its own actor); each step is idempotent, so two
housekeepers racing do no harm.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .clock import Clock
from .keys import CellKeys
from .store import CellStore
from .submission import compact_history, purge_finished


@dataclass
class Housekeeper:
    store: CellStore
    keys: CellKeys
    clock: Clock
    retention_s: float = 3600.0  # how long finished jobs stay readable
    every_s: float = 60.0
    keep_revisions: int = 10_000  # history kept for watchers that fell behind
    last_run: float = field(default=float("-inf"))
    purged: int = 0
    compactions: int = 0
    # The most recent purged ids, so an audit can tell "purged on purpose" from "lost".
    recently_purged: deque[str] = field(default_factory=lambda: deque(maxlen=100_000))

    def tick(self) -> bool:
        """Run if due. Returns whether it ran."""
        now = self.clock.now()
        if now - self.last_run < self.every_s:
            return False
        self.last_run = now
        ids = purge_finished(self.store, self.keys, now, self.retention_s)
        self.purged += len(ids)
        self.recently_purged.extend(ids)
        if compact_history(self.store, self.keep_revisions) is not None:
            self.compactions += 1
        return True
