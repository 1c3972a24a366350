"""The decision pipeline: one job's unbound tasks -> claims, read off the scheduler cache.

The array work (feasibility mask, weighted scores, seeded pick) is ``gpu.assign_job``;
this module turns a stored job into its inputs and its result into commit claims. It
only reads the cache's columns: the scheduler assumes what a decision returns
(``SchedulerCache.assume``, schedulers/cache.py), so the next job of the batch sees it.

``DecideFn`` is the one seam: a scheduler takes any function with ``decide_job``'s
signature, so a simulation or a test can swap the decision without touching the loop.
It gets the cache's columns and row index, and must only read them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cellsched import gpu
from cellsched.cellstate.model import Claim, JobRecord, TransactionMode
from cellsched.cellstate.resources import RESOURCE_NAMES

ALIKE_MIN_JOBS = 2  # fewer alike jobs than this are decided one by one


def decision_seed(base: int, job_id: str, attempt: int) -> int:
    """The pick's seed: (job id, attempt), so parallel schedulers spread and a decision
    replays; ``base`` (a simulation's seed) shifts every job's stream at once."""
    if base == 0:
        return gpu.seed_from(job_id, attempt)
    digest = hashlib.blake2b(f"{base}\x00{job_id}\x00{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass
class Decision:
    claims: list[Claim] = field(default_factory=list)
    unplaced: int = 0  # tasks left without a machine
    reason: str = ""  # why they were left, naming the filter or resource; "" when none
    tasks_decided: int = 0
    # The same reason as data, per group left short (Nomad's AllocMetric): the filter that
    # left no machine, the resource, machines evaluated and how many each filter rejected.
    unplaceable: list[dict] = field(default_factory=list)

    def refusal(self) -> dict:
        """What the job record keeps beside `reason` when the job is parked for this decision."""
        return {"kind": "unplaceable", "groups": self.unplaceable}


DecideFn = Callable[[gpu.MachineColumns, Mapping[str, int], JobRecord, gpu.Policy, int], Decision]


def decide_job(columns: gpu.MachineColumns, index: Mapping[str, int], record: JobRecord,
               policy: gpu.Policy, seed: int) -> Decision:
    """Place every unbound task of ``record`` on ``columns`` (read only).

    ``index`` maps machine id -> row of ``columns``. Gangs (ALL_OR_NOTHING) claim
    nothing unless every task found a machine, so a half-placed gang is never assumed
    and never holds capacity in the cache that the next job could have used.
    """
    specs, task_ids = group_specs(record, index)
    if not specs:
        return Decision()
    # 1-3. feasibility mask over machine rows -> weighted scores -> seeded randomised pick.
    assignment = gpu.assign_job(columns, specs, policy, seed)
    # Rows back to (task, machine) claims; unplaced tasks keep the filter that stopped them.
    decision = _claims(columns, record, specs, task_ids, assignment)
    # All-or-nothing: a gang that is short of even one task claims nothing.
    if record.job.mode is TransactionMode.ALL_OR_NOTHING and decision.unplaced:
        return Decision([], decision.unplaced, f"gang needs every task placed: {decision.reason}",
                        decision.tasks_decided, decision.unplaceable)
    # 4. the caller assumes decision.claims into its SchedulerCache.
    return decision


def group_specs(record: JobRecord, index: Mapping[str, int]) -> tuple[list[gpu.GroupSpec], list[list[str]]]:
    """The kernels' view of a job: one GroupSpec per group with unbound tasks.

    A group with different_machines avoids the machines its already-bound tasks hold,
    so a retry of an incrementally placed job keeps the constraint.
    """
    unbound: dict[int, list[str]] = {}
    for tid, gi, _ in record.unbound_tasks():
        unbound.setdefault(gi, []).append(tid)
    specs, task_ids = [], []
    for gi, tids in unbound.items():
        group = record.job.groups[gi]
        avoid: frozenset[int] = frozenset()
        if group.different_machines:
            prefix = f"{record.job.id}/{gi}/"
            avoid = frozenset(index[m] for t, m in record.bound.items() if t.startswith(prefix) and m in index)
        spec = gpu.GroupSpec.from_task_group(group, avoid_machines=avoid)
        if len(tids) != spec.count:  # some tasks are bound already (a retry): place only the rest
            spec = gpu.GroupSpec(spec.request, len(tids), spec.labels, spec.gpu_models,
                                 spec.different_machines, spec.avoid_machines, name=group.name)
        specs.append(spec)
        task_ids.append(tids)
    return specs, task_ids


def unplaceable_obj(group: str, why: gpu.Unplaceable) -> dict:
    return {"group": group, "tasks_unplaced": len(why.tasks), "reason": why.reason.value,
            "resource": why.resource, "machines_evaluated": why.machines,
            "rejected": {name: n for name, n in sorted(why.rejected.items()) if n},
            "closest_machines": [{"machine": m, "free": dict(zip(RESOURCE_NAMES, f, strict=True))}
                                 for m, f in why.closest]}


def _claims(columns: gpu.MachineColumns, record: JobRecord, specs: list[gpu.GroupSpec],
            task_ids: list[list[str]], assignment: gpu.Assignment) -> Decision:
    out = Decision(tasks_decided=sum(len(t) for t in task_ids))
    reasons = []
    jid, ids = record.job.id, columns.machine_ids
    for g, (spec, tids) in enumerate(zip(specs, task_ids, strict=True)):
        for i, row in enumerate(assignment.machines[g].tolist()):
            if row >= 0:  # the task's job is the record's: no need to parse it off the task id
                out.claims.append(Claim(tids[i], ids[row], spec.request, jid))
        why = assignment.reason(g)
        if why is not None:
            out.unplaced += len(why.tasks)
            reasons.append(f"task group {spec.name!r}: {len(why.tasks)} task(s) unplaced, {why.message}")
            out.unplaceable.append(unplaceable_obj(spec.name, why))
    out.reason = "; ".join(reasons)
    return out



def alike_key(record: JobRecord) -> tuple | None:
    """Jobs with equal keys are one-task jobs of one shape, nothing bound yet: they can be
    decided together (``decide_alike``). None for every other job."""
    groups = record.job.groups
    if len(groups) != 1 or groups[0].count != 1 or record.bound or record.done:
        return None
    g = groups[0]
    return (tuple(g.request), tuple(sorted(g.labels.items())))


def alike_batches(records: Mapping[str, JobRecord]) -> list[list[str]]:
    """The job ids of ``records`` (in their order) grouped by ``alike_key``, groups of at
    least ALIKE_MIN_JOBS only."""
    by_key: dict[tuple, list[str]] = {}
    for jid, rec in records.items():
        key = alike_key(rec)
        if key is not None:
            by_key.setdefault(key, []).append(jid)
    return [jids for jids in by_key.values() if len(jids) >= ALIKE_MIN_JOBS]


def decide_alike(columns: gpu.MachineColumns, records: list[JobRecord], policy: gpu.Policy,
                 seed: int) -> list[Decision]:
    """Decide one-task jobs of one shape (equal ``alike_key``) in one vectorised pass
    (``gpu.assign_alike``); one Decision per record, in order. Reads the columns only."""
    group = records[0].job.groups[0]
    spec = gpu.GroupSpec.from_task_group(group)
    assignment = gpu.assign_alike(columns, spec, len(records), policy, seed)
    why = assignment.reason(0)
    out = []
    for rec, row in zip(records, assignment.machines[0].tolist(), strict=True):
        tid = next(t for t, _, _ in rec.unbound_tasks())
        if row >= 0:
            out.append(Decision([Claim(tid, columns.machine_ids[row], spec.request)], tasks_decided=1))
        else:  # unplaced tasks always come with their reason
            assert why is not None
            out.append(Decision([], 1, f"task group {group.name!r}: 1 task(s) unplaced, {why.message}", 1,
                                [unplaceable_obj(group.name, why) | {"tasks_unplaced": 1}]))
    return out


def decide_batches(columns: gpu.MachineColumns, records: Mapping[str, JobRecord], attempts: Mapping[str, int],
                   policy: gpu.Policy, base_seed: int,
                   assume: Callable[[list[Claim]], None]) -> dict[str, Decision]:
    """Every batch of alike jobs among ``records`` decided together, each seeded from its first
    job's (id, attempt), its claims handed to ``assume`` (the scheduler's cache) before the
    next batch is decided. A batch whose decision raises is left out: its jobs are then
    decided one by one, where an error parks only the job that raised it."""
    out: dict[str, Decision] = {}
    for jids in alike_batches(records):
        seed = decision_seed(base_seed, jids[0], attempts[jids[0]])
        try:
            decisions = decide_alike(columns, [records[j] for j in jids], policy, seed)
        except Exception:
            continue
        assume([c for d in decisions for c in d.claims])
        out.update(zip(jids, decisions, strict=True))
    return out
