"""cellsched.gpu: vectorised scoring and placement kernels, CuPy on GPUs, NumPy elsewhere.

How a scheduler uses it::

    from cellsched import gpu

    # Once, from the scheduler cache's copy of the cell (the backend is chosen here, once):
    cols = gpu.MachineColumns(machine_ids, capacity, used, labels, schedulable)
    # or gpu.MachineColumns.from_cell(machines, allocations)

    # On every watch event, refresh only the rows that changed (schedulers/cache.py does):
    cols.update_rows(indices, used_rows)                  # allocation records
    cols.update_machines(indices, capacity_rows, labels, schedulable)  # machine records

    # Decide a job: every task of every group in one call.
    groups = [gpu.GroupSpec.from_task_group(g) for g in job.groups]
    a = gpu.assign_job(cols, groups, gpu.SPREAD, seed=(job.id, attempt))
    a.machines[g][i]          # machine index of task i of group g, or -1
    a.reason(g)               # gpu.Unplaceable: Reason, resource, per-filter counts, message
    a.used                    # row -> used vector after the placements: what to assume
                              # (the scheduler's cache, schedulers/cache.py, assumes it)

    # Ranking without placing (dry runs, benchmarks): fused top-k per group.
    top = gpu.score_topk(cols, groups, gpu.PACK, k=8)   # top.indices, top.scores [T, k]

Public API (signatures):
    choose_array_module(pairs=0, setting=None) -> module     numpy or cupy (CELLSCHED_ARRAY_BACKEND)
    MachineColumns(machine_ids, capacity, used=None, labels=None, schedulable=None, *, xp=None)
    GroupSpec(request, count=1, labels={}, gpu_models=frozenset(), different_machines=False,
              avoid_machines=frozenset(), anti_affinity=frozenset(), name="")
    Policy(name, weights={Scorer: float}, selection=Selection.TOP_K, top_k=8, home=Home())
        presets: SPREAD, PACK, TETRIS, GPU_PACK, RANDOM_FIRST_FIT (PRESETS by name)
        policy.at_home(index, count): picks drawn first from home index of count (``home``)
    assign_job(columns, groups, policy, seed) -> Assignment
    assign_alike(columns, spec, jobs, policy, seed) -> Assignment   many one-task jobs of one shape at once
    score_topk(columns, groups, policy, *, k=None, memory_budget=..., fused=None) -> TopK
    score_topk_by_class(columns, groups, policy, *, k=None, classes=None) -> TopK
    seed_from(job_id, attempt) -> int

Modules, one concept each: ``backend`` (xp choice), ``columns`` (device-resident machine
columns), ``spec`` (task group constraints), ``policy`` (scorer weights), ``kernels``
(the xp kernels, formulas in docstrings), ``cuda`` (fused CuPy kernel), ``select``
(chunked top-k, seeded pick), ``home`` (a scheduler's share of the cell, picked from first),
``assign`` (batch assignment), ``alike`` (many one-task jobs of one shape in one pass), ``reasons`` (why a task
is unplaceable), ``equivalence`` (identical machines scored once), ``reference`` (scalar
test oracle). Depends on ``cellsched.cellstate`` only.
"""

from .alike import assign_alike
from .assign import Assignment, assign_job
from .backend import Backend, BackendUnavailableError, choose_array_module, cupy_usable
from .columns import MachineColumns
from .equivalence import EquivalenceClasses, score_topk_by_class
from .home import Home
from .policy import GPU_PACK, PACK, PRESETS, RANDOM_FIRST_FIT, SPREAD, TETRIS, Policy, Scorer, Selection
from .reasons import Reason, Unplaceable
from .select import TopK, score_topk, seed_from
from .spec import GPU_MODEL_LABEL, GroupSpec

__all__ = [
    "GPU_MODEL_LABEL",
    "GPU_PACK",
    "PACK",
    "PRESETS",
    "RANDOM_FIRST_FIT",
    "SPREAD",
    "TETRIS",
    "Assignment",
    "Backend",
    "BackendUnavailableError",
    "EquivalenceClasses",
    "GroupSpec",
    "Home",
    "MachineColumns",
    "Policy",
    "Reason",
    "Scorer",
    "Selection",
    "TopK",
    "Unplaceable",
    "assign_alike",
    "assign_job",
    "choose_array_module",
    "cupy_usable",
    "score_topk",
    "score_topk_by_class",
    "seed_from",
]
