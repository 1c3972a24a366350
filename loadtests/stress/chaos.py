"""The chaos thread of a stress run, seeded: what happens to a cell while schedulers commit.

Each tick does one of:
- release: above the high-water mark, tasks of a job on a random busy machine finish
  (or fail, against the job's failure budget), freeing capacity the schedulers race for;
- drain: an UP machine goes DRAINING (keeps its tasks until the monitor evicts them);
- lose: an UP machine goes DOWN; both come back UP a seeded while later;
- monitor: MachineMonitor (no liveness agents) evicts tasks from DRAINING/DOWN machines;
- purge: finished and failed jobs with nothing bound leave the store, so the per-write
  invariant check stays cheap (the checker is told first);
- compact: the store's history is compacted, as the housekeeper does, so the memory
  store stays small and a scheduler whose watch fell behind must resync its copy.
Every operation here is an ordinary client of the store; races with commits are the point.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass, field

from cellsched.cellstate import codec
from cellsched.cellstate.clock import RealClock
from cellsched.cellstate.errors import CellError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.machine_health import MachineMonitor
from cellsched.cellstate.machines import set_machine_state
from cellsched.cellstate.model import TERMINAL_STATUSES, MachineState, TaskOutcome, job_of_task
from cellsched.cellstate.retention import compact_history, purge_finished
from cellsched.cellstate.store import CellStore

from .checking import InvariantRecorder

ACTIONS = (("release", 0.70), ("drain", 0.07), ("lose", 0.07), ("monitor", 0.12), ("purge", 0.03),
           ("compact", 0.01))
KEEP_REVISIONS = 200  # compaction keeps this much history: a lagging watch must resync


@dataclass
class ChaosStats:
    released_tasks: int = 0
    failed_tasks: int = 0
    drains: int = 0
    downs: int = 0
    ups: int = 0
    evicted_tasks: int = 0
    purged_jobs: int = 0
    compactions: int = 0
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)
    util_samples: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "util_samples"}
        samples = sorted(self.util_samples)
        out["util_p50"] = samples[len(samples) // 2] if samples else None
        return out


class Chaos:
    def __init__(self, store: CellStore, keys: CellKeys, recorder: InvariantRecorder, seed: int,
                 high_water: float = 0.85, tick_s: tuple[float, float] = (0.01, 0.04),
                 outage_s: tuple[float, float] = (0.5, 3.0), max_release: int = 300, max_out: int = 4,
                 purge_after_s: float = 2.0):
        self.store = store
        self.keys = keys
        self.recorder = recorder
        self.rng = random.Random(seed)
        self.high_water = high_water
        self.tick_s = tick_s
        self.outage_s = outage_s
        self.max_release = max_release
        self.max_out = max_out
        self.purge_after_s = purge_after_s  # like the housekeeper's retention, only short
        self.monitor = MachineMonitor(store, keys, RealClock(), liveness_required=False)
        self.stats = ChaosStats()
        self._back_up: dict[str, float] = {}  # machine -> when it comes back UP

    def run(self, stop: threading.Event) -> None:
        names, weights = zip(*ACTIONS, strict=True)
        while not stop.wait(self.rng.uniform(*self.tick_s)):
            action = self.rng.choices(names, weights)[0]
            try:
                self._restore_due()
                getattr(self, f"_{action}")()
            except CellError as exc:  # e.g. a release that kept conflicting: count it, go on
                self._error(f"{action}: {exc!r}")
            except RuntimeError as exc:  # release_tasks / set_machine_state give up with this
                self._error(f"{action}: {exc!r}")
        for mid in list(self._back_up):  # leave every machine UP for the final check
            self._set(mid, MachineState.UP)

    def _error(self, msg: str) -> None:
        self.stats.errors += 1
        if len(self.stats.error_messages) < 10:
            self.stats.error_messages.append(msg)

    # -- actions -----------------------------------------------------------------

    def _release(self) -> None:
        allocs, _ = self.store.get_prefix(self.keys.alloc_prefix)
        specs, _ = self.store.get_prefix(self.keys.spec_prefix)
        cap = sum(codec.decode_machine(kv.key, kv.value).capacity[0] for kv in specs)
        decoded = [codec.decode_alloc(kv.key, kv.value) for kv in allocs]
        used = sum(a.used[0] for a in decoded)
        util = used / cap if cap else 0.0
        self.stats.util_samples.append(util)
        busy = [a for a in decoded if a.tasks]
        if util < self.high_water or not busy:
            return
        alloc = self.rng.choice(busy)
        jid = job_of_task(self.rng.choice(sorted(alloc.tasks)))
        kv = self.store.get(self.keys.job(jid))
        if kv is None:
            return
        bound = sorted(codec.decode_job(kv.key, kv.value).bound)
        if len(bound) > self.max_release:  # a big job finishes a slice at a time
            bound = self.rng.sample(bound, self.max_release)
        outcome = TaskOutcome.FAILED if self.rng.random() < 0.1 else TaskOutcome.FINISHED
        release_tasks(self.store, self.keys, jid, bound, time.time(), outcome)
        self.stats.released_tasks += len(bound)
        if outcome is TaskOutcome.FAILED:
            self.stats.failed_tasks += len(bound)

    def _up_machines(self) -> list[str]:
        specs, _ = self.store.get_prefix(self.keys.spec_prefix)
        return sorted(codec.decode_machine(kv.key, kv.value).id for kv in specs
                      if codec.decode_machine(kv.key, kv.value).state is MachineState.UP)

    def _take_out(self, state: MachineState) -> None:
        up = [m for m in self._up_machines() if m not in self._back_up]
        if not up or len(self._back_up) >= self.max_out:  # keep most of the cell in service
            return
        mid = self.rng.choice(up)
        self._set(mid, state)
        self._back_up[mid] = time.monotonic() + self.rng.uniform(*self.outage_s)
        if state is MachineState.DOWN:
            self.stats.downs += 1
        else:
            self.stats.drains += 1

    def _drain(self) -> None:
        self._take_out(MachineState.DRAINING)

    def _lose(self) -> None:
        self._take_out(MachineState.DOWN)

    def _restore_due(self) -> None:
        now = time.monotonic()
        for mid, at in list(self._back_up.items()):
            if at <= now:
                self._set(mid, MachineState.UP)

    def _set(self, mid: str, state: MachineState) -> None:
        set_machine_state(self.store, self.keys, mid, state)
        if state is MachineState.UP:
            self._back_up.pop(mid, None)
            self.stats.ups += 1

    def _monitor(self) -> None:
        self.stats.evicted_tasks += self.monitor.tick().evicted_tasks

    def _compact(self) -> None:
        self.stats.compactions += compact_history(self.store, KEEP_REVISIONS) is not None

    def _purge(self) -> None:
        """The library's purge, with the checker told first: it stops expecting every job the
        purge may delete, then expects again those that stayed."""
        kvs, _ = self.store.get_prefix(self.keys.jobs_prefix)
        now = time.time()
        candidates = []
        for kv in kvs:
            rec = codec.decode_job(kv.key, kv.value)
            if rec.status in TERMINAL_STATUSES and rec.finished_at is not None \
                    and rec.finished_at + self.purge_after_s <= now:
                candidates.append(rec.job.id)
        if not candidates:
            return
        self.recorder.unexpect(candidates)
        purged = set(purge_finished(self.store, self.keys, now, self.purge_after_s))
        self.recorder.accept([jid for jid in candidates if jid not in purged])
        self.stats.purged_jobs += len(purged)
