"""What the kernels need to know about one task group: ``GroupSpec``.

The scheduler builds these from ``cellstate.model.TaskGroup`` (``GroupSpec.from_task_group``)
plus what it knows about the rest of the cell (machines to avoid for anti-affinity).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cellsched.cellstate import resources as res
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.model import GPU_MODEL_LABEL, TaskGroup


@dataclass(frozen=True)
class GroupSpec:
    """``count`` identical tasks requesting ``request`` each.

    Constraints, all of which must hold on a machine:
      * ``labels``: the machine has every one of these label values;
      * ``gpu_models``: when not empty, the machine's ``gpu.model`` label is one of them;
      * ``avoid_machines``: machine indices excluded (anti-affinity with tasks already
        running there, worked out by the scheduler);
      * ``anti_affinity``: indices of other groups of the same job whose machines this
        group must not share (symmetric);
      * ``different_machines``: no two tasks of this group on one machine.
    """

    request: res.Vector
    count: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    gpu_models: frozenset[str] = frozenset()
    different_machines: bool = False
    avoid_machines: frozenset[int] = frozenset()
    anti_affinity: frozenset[int] = frozenset()
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "request", res.check_vector(self.request, f"group {self.name!r}.request"))
        if not isinstance(self.count, int) or self.count < 0:
            raise InvalidInputError(f"group {self.name!r}: count must be a non-negative integer")
        object.__setattr__(self, "labels", dict(self.labels))
        object.__setattr__(self, "gpu_models", frozenset(self.gpu_models))
        object.__setattr__(self, "avoid_machines", frozenset(int(i) for i in self.avoid_machines))
        object.__setattr__(self, "anti_affinity", frozenset(int(i) for i in self.anti_affinity))

    @property
    def constraint_key(self) -> tuple:
        """Groups with equal keys have the same label/GPU-model/avoid eligibility."""
        return (tuple(sorted(self.labels.items())), tuple(sorted(self.gpu_models)), tuple(sorted(self.avoid_machines)))

    @classmethod
    def from_task_group(cls, group: TaskGroup, avoid_machines: frozenset[int] = frozenset()) -> GroupSpec:
        """Required labels become label constraints; ``gpu.model: "A100,H100"`` allows either model."""
        labels = dict(group.labels)
        models = labels.pop(GPU_MODEL_LABEL, "")
        return cls(
            request=group.request,
            count=group.count,
            labels=labels,
            gpu_models=frozenset(m.strip() for m in models.split(",") if m.strip()),
            different_machines=group.different_machines,
            avoid_machines=avoid_machines,
            name=group.name,
        )
