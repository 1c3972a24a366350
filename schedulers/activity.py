"""What a scheduler shows the `/ui` dashboard, published next to its metrics
(schedulers/metrics_publish.py: same period, same lease, same txn):

    /<cell>/activity/<scheduler>  ->  {"scheduler", "job_class", "published_at",
        "series": [[t, busyness, conflict_fraction], ...],   per publish period, the last SERIES_POINTS
        "decisions": [...]}                                   the decision ring (schedulers/decision_ring.py)

A series point covers the period since the previous one: busyness is the share of that
period spent in attempts, the conflict fraction that period's conflicted claims per successful
commit txn (the published metrics' values are over the scheduler's lifetime). The value is
bounded: SERIES_POINTS points and the ring's published bytes.
"""

from __future__ import annotations

import logging
from collections import deque

from cellsched.cellstate import codec
from cellsched.cellstate.errors import CellError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import CellStore, KeyValue

from .metrics import SchedulerMetrics

log = logging.getLogger("cellsched.metrics")

SERIES_POINTS = 120  # 10 minutes at the default 5 s period


class ActivitySeries:
    def __init__(self, started_at: float) -> None:
        self.points: deque[list[float]] = deque(maxlen=SERIES_POINTS)
        self._at = started_at
        self._busy = 0.0
        self._txns = 0
        self._conflicts = 0

    def sample(self, now: float, m: SchedulerMetrics) -> None:
        span = now - self._at
        if span <= 0:
            return
        txns, conflicts = m.successful_txns, m.conflicted_claims
        busy = min(1.0, max(0.0, (m.busy_s - self._busy) / span))
        d_txns = txns - self._txns
        fraction = (conflicts - self._conflicts) / d_txns if d_txns > 0 else 0.0
        self.points.append([round(now, 3), round(busy, 4), round(fraction, 4)])
        self._at, self._busy, self._txns, self._conflicts = now, m.busy_s, txns, conflicts


def activity_value(scheduler, series: ActivitySeries, now: float) -> dict:
    """`scheduler`: the core.Scheduler whose ring (scheduler.trace.ring) is published."""
    return {"scheduler": scheduler.name, "job_class": scheduler.settings.job_class.value, "published_at": now,
            "series": list(series.points), "decisions": scheduler.trace.ring.published()}


def decode_activity(keys: CellKeys, kvs: list[KeyValue]) -> dict[str, tuple[int, dict]]:
    """Scheduler name -> (the key's mod_revision, its value); a value that does not decode is
    left out (and logged)."""
    out: dict[str, tuple[int, dict]] = {}
    for kv in kvs:
        try:
            out[keys.last_segment(kv.key)] = kv.mod_revision, codec.decode_obj(kv.key, kv.value)
        except CellError as exc:
            log.warning("skipping published activity %s: %s", kv.key, exc)
    return out


def read_activity(store: CellStore, keys: CellKeys) -> dict[str, tuple[int, dict]]:
    kvs, _ = store.get_prefix(keys.activity_prefix)
    return decode_activity(keys, kvs)
