"""The dry-run plan: where a job would go now, and how the top machines score.

It builds a scheduler cache from one snapshot of the cell (the schedulers' own copy,
schedulers/cache.py), runs the class's decision (schedulers/decide.py) and ranks each
group's machines with the class's policy (gpu.score_topk), with each scorer's own value
for the machines shown. Nothing is written and nothing is assumed: another scheduler
may take the capacity before the job is submitted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from cellsched import gpu
from cellsched.cellstate.model import JobClass, JobRecord, group_of_task
from cellsched.gpu.backend import to_host
from cellsched.gpu.kernels import KERNELS
from cellsched.gpu.policy import SCORER_ORDER
from cellsched.gpu.select import machine_arrays
from cellsched.schedulers.cache import SchedulerCache
from cellsched.schedulers.decide import decide_job, decision_seed
from cellsched.schedulers.settings import PRESETS

from .context import ApiContext
from .models_jobs import JobIn
from .submit import to_job

MAX_TOP = 20


class ScoredMachine(BaseModel):
    machine: str
    score: float = Field(description="the policy's weighted score (0 for a policy without scorers)")
    scorers: dict[str, float] = Field(description="each scorer's own score on this machine, in [0, 1]")


class GroupPlan(BaseModel):
    group: str
    tasks: int
    placed: dict[str, int] = Field(description="machine -> tasks of this group the decision put there")
    top: list[ScoredMachine]


class PlanOut(BaseModel):
    job_class: JobClass = Field(serialization_alias="class")
    policy: str
    revision: int = Field(description="the store revision the plan was made on")
    feasible: bool = Field(description="every task found a machine now")
    unplaced: int
    reason: str
    unplaceable_groups: list[dict[str, Any]]
    groups: list[GroupPlan]


def dry_run(ctx: ApiContext, spec: JobIn, k: int) -> PlanOut:
    job, _, _ = to_job(ctx, spec, spec.id or "dry-run", "body")
    settings = PRESETS[job.job_class]
    policy = settings.policy
    cache = SchedulerCache(ctx.store, ctx.keys, ctx.max_tasks_per_machine, backend="numpy")
    try:
        revision = cache.revision
        decision = decide_job(cache.columns, cache.index, JobRecord(job), policy, decision_seed(0, job.id, 0))
        placed = [Counter[str]() for _ in job.groups]
        for c in decision.claims:
            placed[group_of_task(c.task_id)][c.machine_id] += 1
        specs = [gpu.GroupSpec.from_task_group(g) for g in job.groups]
        tops = _top(cache, specs, policy, k)
    finally:
        cache.close()
    groups = [GroupPlan(group=g.name, tasks=g.count, placed=dict(placed[i]), top=tops[i])
              for i, g in enumerate(job.groups)]
    return PlanOut(job_class=job.job_class, policy=policy.name, revision=revision, feasible=decision.unplaced == 0,
                   unplaced=decision.unplaced, reason=decision.reason, unplaceable_groups=decision.unplaceable,
                   groups=groups)


def _top(cache: SchedulerCache, specs: list[gpu.GroupSpec], policy: gpu.Policy, k: int) -> list[list[ScoredMachine]]:
    cols = cache.columns
    if cache.size == 0:
        return [[] for _ in specs]
    top = gpu.score_topk(cols, specs, policy, k=min(k, cache.size))
    xp = cols.xp
    arrays = machine_arrays(cols)
    req_f = xp.asarray(np.array([s.request for s in specs], dtype=np.float32))
    per_scorer = {s.value: to_host(KERNELS[s](xp, arrays, req_f)) for s in SCORER_ORDER}
    out = []
    for g in range(len(specs)):
        rows = [(int(i), float(sc)) for i, sc in zip(top.indices[g], top.scores[g], strict=True) if i >= 0]
        out.append([ScoredMachine(machine=cols.machine_ids[i], score=round(sc, 6),
                                  scorers={name: round(float(v[g, i]), 6) for name, v in per_scorer.items()})
                    for i, sc in rows if np.isfinite(sc)])
    return out
