"""Machine liveness and draining: tasks on machines that are gone get rescheduled.

A machine agent holds a lease and keeps /node/live/<machine> bound to it (`heartbeat`).
When the lease expires the key vanishes. The MachineMonitor then marks the machine DOWN
and evicts its tasks; tasks on DRAINING or DOWN machines are evicted the same way.
Evicted tasks become unbound and their jobs go back to the queue, where any scheduler
places them again; an eviction is not held against the job's failure budget.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

from . import codec
from .clock import Clock
from .keys import CellKeys
from .lifecycle import release_tasks
from .model import MachineState, TaskOutcome, job_of_task
from .store import CellStore, Get, ModRevisionIs, Put


def heartbeat(store: CellStore, keys: CellKeys, machine_id: str, lease_id: int) -> None:
    """Called by a machine's agent: (re)bind its liveness key to its lease."""
    store.put(keys.live(machine_id), codec.encode_obj({"machine": machine_id}), lease_id)


@dataclass
class MonitorReport:
    marked_down: list[str] = field(default_factory=list)
    evicted_tasks: int = 0


@dataclass
class MachineMonitor:
    store: CellStore
    keys: CellKeys
    clock: Clock
    liveness_required: bool = True  # False when no machine agents run (simulations, replays)

    def tick(self) -> MonitorReport:
        out = MonitorReport()
        specs, lives, allocs = self.store.txn([], [Get(self.keys.spec_prefix, prefix=True),
                                                  Get(self.keys.live_prefix, prefix=True),
                                                  Get(self.keys.alloc_prefix, prefix=True)]).reads
        alive = {self.keys.last_segment(kv.key) for kv in lives}
        states = {}
        for kv in specs:
            m = codec.decode_machine(kv.key, kv.value)
            states[m.id] = m.state
            if self.liveness_required and m.state is not MachineState.DOWN and m.id not in alive:
                down = replace(m, state=MachineState.DOWN)
                if self.store.txn([ModRevisionIs(kv.key, kv.mod_revision)],
                                  [Put(kv.key, codec.encode_machine(down))]).succeeded:
                    states[m.id] = MachineState.DOWN
                    out.marked_down.append(m.id)
        by_job: dict[str, list[str]] = defaultdict(list)
        for kv in allocs:
            mid = self.keys.last_segment(kv.key)
            if states.get(mid) in (MachineState.DOWN, MachineState.DRAINING):
                for tid in codec.decode_alloc(kv.key, kv.value).tasks:
                    by_job[job_of_task(tid)].append(tid)
        for jid, tids in by_job.items():
            release_tasks(self.store, self.keys, jid, tids, self.clock.now(), TaskOutcome.EVICTED)
            out.evicted_tasks += len(tids)
        return out
