"""Machine liveness and draining: tasks on machines that are gone get rescheduled.

A machine agent holds a lease and keeps /<cell>/live/<machine> bound to it (`heartbeat`).
When the lease expires the key vanishes. The MachineMonitor then marks the machine DOWN
and evicts its tasks; tasks on DRAINING or DOWN machines are evicted the same way.
Evicted tasks become unbound and their jobs go back to the queue, where any scheduler
places them again; an eviction is not held against the job's failure budget.

Every write the monitor makes is guarded against what it read, so a race costs a tick,
never a wrong state:
- DOWN compares the spec and the live key's absence: a heartbeat landing after the read
  keeps the machine UP.
- A machine the monitor itself marked DOWN (state_by "monitor") goes back to UP once its
  live key returns, comparing the spec and that live key. States an operator set, and
  DRAINING, are never changed by the monitor.
- Eviction names (task, machine): a task re-placed elsewhere since the read stays put.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

from . import codec
from .clock import Clock
from .errors import CellError
from .keys import CellKeys
from .lifecycle import release_tasks
from .machines import write_spec
from .model import Machine, MachineState, TaskOutcome, job_of_task
from .store import CellStore, Get, KeyValue, ModRevisionIs

MONITOR = "monitor"


def heartbeat(store: CellStore, keys: CellKeys, machine_id: str, lease_id: int) -> None:
    """Called by a machine's agent: (re)bind its liveness key to its lease."""
    store.put(keys.live(machine_id), codec.encode_obj({"machine": machine_id}), lease_id)


@dataclass
class MonitorReport:
    marked_down: list[str] = field(default_factory=list)
    marked_up: list[str] = field(default_factory=list)
    evicted_tasks: int = 0  # tasks asked to leave DOWN or DRAINING machines (some may have left already)
    eviction_errors: list[str] = field(default_factory=list)  # one line per job whose eviction failed


@dataclass
class MachineMonitor:
    store: CellStore
    keys: CellKeys
    clock: Clock
    liveness_required: bool = True  # False when no machine agents run (simulations, replays)

    def tick(self) -> MonitorReport:
        out = MonitorReport()
        # Specs and live keys in one txn: "no live key" is then judged on the same snapshot
        # as the state it changes. Allocation records are read only for machines to evict.
        specs, lives = self.store.txn([], [Get(self.keys.spec_prefix, prefix=True),
                                           Get(self.keys.live_prefix, prefix=True)]).reads
        alive = {self.keys.last_segment(kv.key): kv for kv in lives}
        evict_from = []
        for kv in specs:
            m = codec.decode_machine(kv.key, kv.value)
            if self.liveness_required:
                m = self._follow_liveness(kv, m, alive.get(m.id), out)
            if m.state in (MachineState.DOWN, MachineState.DRAINING):
                evict_from.append(m.id)
        self._evict(self._tasks_on(evict_from), out)
        return out

    def _follow_liveness(self, kv: KeyValue, m: Machine, live: KeyValue | None, out: MonitorReport) -> Machine:
        """Mark a dead UP machine DOWN, or a live machine we marked DOWN UP. Returns its state now."""
        live_key = self.keys.live(m.id)
        if m.state is MachineState.UP and live is None:
            # Only UP machines: DOWN-ing a DRAINING one would let its return undo the drain.
            new, guard, marked = replace(m, state=MachineState.DOWN, state_by=MONITOR), 0, out.marked_down
        elif m.state is MachineState.DOWN and m.state_by == MONITOR and live is not None:
            new, guard, marked = replace(m, state=MachineState.UP, state_by=MONITOR), live.mod_revision, out.marked_up
        else:
            return m
        if write_spec(self.store, self.keys, kv, new, [ModRevisionIs(live_key, guard)]):
            marked.append(m.id)
            return new
        return m  # changed meanwhile: the next tick judges it afresh

    def _tasks_on(self, machine_ids: list[str]) -> dict[str, str]:
        """task id -> machine id for every task on these machines, a bounded txn at a time."""
        out: dict[str, str] = {}
        per_txn = max(1, self.store.limits.max_txn_ops // 2)
        for start in range(0, len(machine_ids), per_txn):
            chunk = machine_ids[start:start + per_txn]
            reads = self.store.txn([], [Get(self.keys.alloc(mid)) for mid in chunk]).reads
            for mid, r in zip(chunk, reads, strict=True):
                for kv in r:
                    out.update(dict.fromkeys(codec.decode_alloc(kv.key, kv.value).tasks, mid))
        return out

    def _evict(self, on_machine: dict[str, str], out: MonitorReport) -> None:
        by_job: dict[str, list[str]] = defaultdict(list)
        for tid in on_machine:
            by_job[job_of_task(tid)].append(tid)
        for jid, tids in by_job.items():
            # One job's failure (gone, or conflicting past the retry bound) must not stop
            # the other evictions; the next tick retries it.
            try:
                release_tasks(self.store, self.keys, jid, tids, self.clock.now(), TaskOutcome.EVICTED,
                              on_machine=on_machine)
            except (CellError, RuntimeError) as exc:
                out.eviction_errors.append(f"{jid}: {exc}")
                continue
            out.evicted_tasks += len(tids)
