"""A scheduler's metrics, published into the store under its lease (docs/architecture.md,
"Observability"), so whichever API process is asked can serve the whole cell's.

    /<cell>/metrics/<scheduler>  ->  {"scheduler", "job_class", "mode", "published_at",
        "busyness", "conflict_fraction", "commits", "failed_txns", "conflicts",
        "committed_claims", "tasks_placed", "jobs_placed", "jobs_parked", "lease_losses",
        "wait_seconds": {"buckets": [[le, cumulative count], ...], "sum", "count"}}

`commits` are commit txns that succeeded, `conflicts` claims refused by a conflict (the two
halves of Omega's conflict fraction); `mode` is the scheduler's conflict mode. The value is
bounded (a fixed set of wait buckets, kept incrementally) and written at most every
`metrics_publish_s` from the real-time loop, so publishing costs the store one small put per
scheduler per period. The key is bound to the lease: when the scheduler dies its key goes with
its lease, so a reader that knew the name reports it down (prometheus_text: up 0). The same txn
writes `/<cell>/activity/<scheduler>` (schedulers/activity.py: its recent decisions and a
busyness series, for the `/ui` dashboard), under the same lease.
"""

from __future__ import annotations

import bisect
import logging

from cellsched.cellstate import codec
from cellsched.cellstate.errors import CellError, LeaseNotFoundError, StoreUnavailableError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import CellStore, Put

from .activity import ActivitySeries, activity_value

log = logging.getLogger("cellsched.metrics")

# Upper bounds (seconds) of cellsched_job_wait_seconds: submit -> fully placed.
WAIT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                                   60.0, 300.0, 900.0, 3600.0, float("inf"))


class WaitHistogram:
    """Counts per bucket of an append-only list of waits, folded in incrementally."""

    def __init__(self) -> None:
        self.counts = [0] * len(WAIT_BUCKETS)
        self.total = 0.0
        self._seen = 0

    def fold(self, waits: list[float]) -> None:
        for w in waits[self._seen:]:
            self.counts[bisect.bisect_left(WAIT_BUCKETS, w)] += 1
            self.total += w
        self._seen = len(waits)

    def to_obj(self) -> dict:
        cumulative, running = [], 0
        for le, n in zip(WAIT_BUCKETS, self.counts, strict=True):
            running += n
            cumulative.append(["+Inf" if le == float("inf") else le, running])
        return {"buckets": cumulative, "sum": self.total, "count": running}


class MetricsPublisher:
    def __init__(self, scheduler) -> None:
        """`scheduler`: the core.Scheduler whose metrics, lease, store and clock are read."""
        self.scheduler = scheduler
        self.interval_s = scheduler.settings.metrics_publish_s
        self.key = scheduler.keys.metrics(scheduler.name)
        self.activity_key = scheduler.keys.activity(scheduler.name)
        self.series = ActivitySeries(scheduler.raw_metrics.started_at)
        self.wait = WaitHistogram()
        self.published = 0
        self._at = 0.0
        self._lease = 0  # the lease the last value was bound to

    def value(self) -> dict:
        s = self.scheduler
        m = s.raw_metrics
        now = s.clock.now()
        lifetime = now - m.started_at
        self.wait.fold(m.wait_placed_s)
        return {"scheduler": s.name, "job_class": s.settings.job_class.value, "mode": s.settings.conflict_mode.value,
                "published_at": now, "busyness": m.busy_s / lifetime if lifetime > 0 else 0.0,
                "conflict_fraction": m.conflicted_claims / m.successful_txns if m.successful_txns else 0.0,
                "commits": m.successful_txns, "failed_txns": m.commits.conflicted_txns,
                "conflicts": m.conflicted_claims, "committed_claims": m.committed_claims,
                "tasks_placed": m.tasks_placed, "jobs_placed": m.jobs_placed, "jobs_parked": m.jobs_parked,
                "lease_losses": m.lease_losses, "wait_seconds": self.wait.to_obj()}

    def tick(self) -> bool:
        """Publish if the period is over or the lease is new (the old one took the key with it)."""
        lease_id = self.scheduler.lease.lease_id
        if self.interval_s <= 0 or not lease_id:
            return False
        now = self.scheduler.clock.now()
        if lease_id == self._lease and now - self._at < self.interval_s:
            return False
        self.series.sample(now, self.scheduler.raw_metrics)
        activity = activity_value(self.scheduler, self.series, now)
        try:
            self.scheduler.store.txn([], [Put(self.key, codec.encode_obj(self.value()), lease=lease_id),
                                          Put(self.activity_key, codec.encode_obj(activity), lease=lease_id)])
        except (LeaseNotFoundError, StoreUnavailableError):
            return False  # the loop sees either itself; the next period tries again
        self._at, self._lease = now, lease_id
        self.published += 1
        return True


def read_published(store: CellStore, keys: CellKeys) -> dict[str, dict]:
    """Scheduler name -> its last published metrics, for every scheduler whose lease is alive.
    A value that does not decode is left out (and logged): one bad key must not blank the cell's."""
    kvs, _ = store.get_prefix(keys.metrics_prefix)
    out: dict[str, dict] = {}
    for kv in kvs:
        try:
            obj = codec.decode_obj(kv.key, kv.value)
        except CellError as exc:
            log.warning("skipping published metrics %s: %s", kv.key, exc)
            continue
        out[keys.last_segment(kv.key)] = obj
    return out
