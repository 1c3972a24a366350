"""A scheduler's recent decisions, kept without OpenTelemetry (docs/architecture.md,
"Observability"): a bounded ring of its last batch attempts, each with its child spans'
names, offsets and attributes and its conflict and park events, for the `/ui` dashboard.

    {"seq", "start" (unix seconds), "dur_ms", "jobs", "job_ids" (the first 8),
     "spans":  [{"name", "start_ms", "end_ms", "attrs"}, ...]   schedule.sync / score / commit_txn
     "events": [{"name", "at_ms", "attrs"}, ...]                 conflict / park
     "dropped_spans", "dropped_events", "totals": {...}}

Offsets are milliseconds from the attempt's start. schedulers/decision_trace.py feeds it at
the points where it makes its spans, whether or not tracing exports anything: the loop pays a
`time.time_ns()` and a small dict per span. Bounded in count (`capacity` attempts; per attempt
`MAX_SPANS` spans and `MAX_EVENTS` events, strings cut at `MAX_TEXT`) and, when published
(`published`), in bytes: the oldest attempts are dropped until the encoded ring fits.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque

CAPACITY = 50
MAX_SPANS = 32
MAX_EVENTS = 16
MAX_JOB_IDS = 8
MAX_TEXT = 200
MAX_PUBLISHED_BYTES = 64 * 1024

Scalar = str | int | float | bool


def _ms(t_ns: int, origin_ns: int) -> float:
    return round((t_ns - origin_ns) / 1e6, 3)


def _attrs(attrs: dict) -> dict[str, Scalar]:
    """Scalars only, strings cut, names without the spans' `cellsched.` prefix: the ring's bound
    in bytes rests on this."""
    out: dict[str, Scalar] = {}
    for name, v in attrs.items():
        k = name.removeprefix("cellsched.")
        if isinstance(v, bool | int | float):
            out[k] = v
        else:
            s = v if isinstance(v, str) else json.dumps(v, default=str, separators=(",", ":"))
            out[k] = s if len(s) <= MAX_TEXT else s[:MAX_TEXT - 1] + "…"
    return out


class DecisionRing:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.ring: deque[dict] = deque(maxlen=capacity)
        self.seq = 0  # attempts recorded so far; each record's seq
        self._open: dict | None = None
        self._origin_ns = 0
        self._pending: list[tuple[str, int, int, dict]] = []  # syncs before the attempt held a job
        self._lock = threading.Lock()  # commit chunks may end in threads

    def start(self) -> None:
        """prepare() begins (maybe an idle poll: nothing is kept unless begin() follows)."""
        self.end()
        self._origin_ns = time.time_ns()
        self._pending.clear()

    def span(self, name: str, t0_ns: int, t1_ns: int, attrs: dict) -> None:
        rec = self._open
        if rec is None:
            self._pending.append((name, t0_ns, t1_ns, attrs))
            return
        with self._lock:
            if len(rec["spans"]) >= MAX_SPANS:
                rec["dropped_spans"] += 1
                return
            rec["spans"].append({"name": name, "start_ms": _ms(t0_ns, self._origin_ns),
                                 "end_ms": _ms(t1_ns, self._origin_ns), "attrs": _attrs(attrs)})

    def begin(self, jobs: int, first_ids: list[str]) -> None:
        """The claims hold `jobs` jobs (the first few named): this attempt is kept."""
        self.seq += 1
        self._open = {"seq": self.seq, "start": round(self._origin_ns / 1e9, 6), "dur_ms": 0.0,
                      "jobs": jobs, "job_ids": first_ids[:MAX_JOB_IDS], "spans": [], "events": [],
                      "dropped_spans": 0, "dropped_events": 0, "totals": {}}
        pending, self._pending = self._pending, []
        for name, t0, t1, attrs in pending:
            self.span(name, t0, t1, attrs)

    def event(self, name: str, attrs: dict) -> None:
        rec = self._open
        if rec is None:
            return
        if len(rec["events"]) >= MAX_EVENTS:
            rec["dropped_events"] += 1
            return
        rec["events"].append({"name": name, "at_ms": _ms(time.time_ns(), self._origin_ns), "attrs": _attrs(attrs)})

    def totals(self, totals: dict) -> None:
        if self._open is not None:
            self._open["totals"] = _attrs(totals)

    def end(self) -> None:
        """complete() is over (or the next prepare() found the attempt still open)."""
        rec, self._open = self._open, None
        if rec is not None:
            rec["dur_ms"] = _ms(time.time_ns(), self._origin_ns)
            self.ring.append(rec)

    def published(self, max_bytes: int = MAX_PUBLISHED_BYTES) -> list[dict]:
        """The ring, newest last, less its oldest attempts until it encodes within `max_bytes`."""
        records = list(self.ring)
        sizes = [len(json.dumps(r, separators=(",", ":"))) + 1 for r in records]
        total = sum(sizes)
        first = 0
        while total > max_bytes and first < len(records):
            total -= sizes[first]
            first += 1
        return records[first:]
