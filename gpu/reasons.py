"""Why a task cannot be placed: the filter that left no machine, and what each rejected.

Filters run in the pipeline's order; the first one after which no machine remains is
the reason. ``rejected`` counts, for every filter on its own, how many machines it
turns away, like Kubernetes' "0/5000 nodes are available: 12 Insufficient cpu, ...".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from cellsched.cellstate import resources as res

from .columns import MachineColumns
from .spec import GPU_MODEL_LABEL, GroupSpec


class Reason(Enum):
    NO_MACHINES = "no_machines"  # the cell is empty
    NOT_SCHEDULABLE = "not_schedulable"  # every machine is draining or down
    LABEL_MISMATCH = "label_mismatch"
    GPU_MODEL_MISMATCH = "gpu_model_mismatch"
    ANTI_AFFINITY = "anti_affinity"
    DIFFERENT_MACHINES = "different_machines"  # the group already holds every remaining machine
    INSUFFICIENT_RESOURCE = "insufficient_resource"  # ``resource`` names which


@dataclass(frozen=True)
class Unplaceable:
    """Tasks ``tasks`` of group ``group`` could not be placed."""

    group: int
    tasks: tuple[int, ...]
    reason: Reason
    resource: str | None = None  # for INSUFFICIENT_RESOURCE
    rejected: dict[str, int] = field(default_factory=dict)  # filter name -> machines it rejects
    machines: int = 0
    # The machines nearest to fitting, best first: every filter but the resources passes and
    # the least of free/request over the resources is highest. Each (machine id, free vector).
    closest: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def message(self) -> str:
        what = f"insufficient {self.resource}" if self.resource else self.reason.value.replace("_", " ")
        detail = ", ".join(f"{n}: {c}" for n, c in sorted(self.rejected.items()) if c)
        return f"group {self.group}: 0/{self.machines} machines fit ({what}); rejected by {detail or 'nothing'}"


def explain(
    columns: MachineColumns,
    free: np.ndarray,
    spec: GroupSpec,
    group: int,
    tasks: Iterable[int],
    anti_affinity: np.ndarray,
    own: np.ndarray,
) -> Unplaceable:
    """The reason on host arrays: ``free`` int64[N, R] as the batch left it; ``anti_affinity``
    and ``own`` bool[N]: machines of conflicting groups, and of this group (different-machines)."""
    n = len(columns)
    filters: list[tuple[str, Reason, str | None, np.ndarray]] = [
        ("not schedulable", Reason.NOT_SCHEDULABLE, None, columns.host_schedulable)
    ]
    labels_ok = np.ones(n, dtype=bool)
    for key, value in spec.labels.items():
        codes, table = columns.label_codes(key)
        labels_ok &= codes == table.get(value, -2)
    filters.append(("labels", Reason.LABEL_MISMATCH, None, labels_ok))
    if spec.gpu_models:
        codes, table = columns.label_codes(GPU_MODEL_LABEL)
        allowed = np.array([table[m] for m in spec.gpu_models if m in table], dtype=np.int32)
        filters.append(("gpu model", Reason.GPU_MODEL_MISMATCH, None, np.isin(codes, allowed)))
    avoid = anti_affinity.copy()
    if spec.avoid_machines:
        ids = np.fromiter(spec.avoid_machines, dtype=np.int64)
        avoid[ids[(ids >= 0) & (ids < n)]] = True
    filters.append(("anti-affinity", Reason.ANTI_AFFINITY, None, ~avoid))
    filters.append(("different machines", Reason.DIFFERENT_MACHINES, None, ~own))
    for r, name in enumerate(res.RESOURCE_NAMES):
        filters.append((f"insufficient {name}", Reason.INSUFFICIENT_RESOURCE, name, free[:, r] >= spec.request[r]))

    rejected = {label: int((~ok).sum()) for label, _, _, ok in filters}
    closest = _closest(columns, free, spec, filters)
    remaining = np.ones(n, dtype=bool)
    reason, resource = Reason.NO_MACHINES, None
    if n:
        for _, why, filtered, ok in filters:
            remaining &= ok
            if not remaining.any():
                reason, resource = why, filtered
                break
    return Unplaceable(group, tuple(tasks), reason, resource, rejected, n, closest)


CLOSEST = 3


def _closest(columns: MachineColumns, free: np.ndarray, spec: GroupSpec, filters) -> tuple:
    """The CLOSEST machines that pass every filter but the resources, by how much of the
    request their free room covers (the scarcest resource decides), best first."""
    shape_ok = np.ones(len(columns), dtype=bool)
    for _, why, _, ok in filters:
        if why is not Reason.INSUFFICIENT_RESOURCE:
            shape_ok &= ok
    rows = np.flatnonzero(shape_ok)
    asked = np.asarray(spec.request, dtype=np.float64)
    if not len(rows) or not (asked > 0).any():
        return ()
    cover = (free[rows][:, asked > 0] / asked[asked > 0]).min(axis=1)
    best = rows[np.argsort(-cover, kind="stable")[:CLOSEST]]
    return tuple((columns.machine_ids[r], tuple(int(x) for x in free[r])) for r in best.tolist())
