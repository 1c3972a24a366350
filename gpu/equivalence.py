"""Equivalence classes: identical machines are scored once.

Two machines are equivalent when they have the same capacity, free vector, labels and
schedulability: every kernel gives them the same feasibility and score for every group.
A real cell has few machine shapes (Google 2011: ~10 platforms x a few memory sizes), so
an idle or freshly prefilled cell collapses to far fewer classes than machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .columns import MachineColumns
from .policy import Policy
from .select import TopK, score_topk
from .spec import GroupSpec


@dataclass(frozen=True)
class EquivalenceClasses:
    representatives: np.ndarray  # int64[C], the lowest machine index of each class
    inverse: np.ndarray  # int64[N], the class of each machine
    order: np.ndarray  # int64[N], machine indices grouped by class, ascending within a class
    offsets: np.ndarray  # int64[C + 1], class c's members are order[offsets[c]:offsets[c + 1]]

    @classmethod
    def of(cls, columns: MachineColumns) -> EquivalenceClasses:
        keys = [columns.host_capacity, columns.host_free, columns.host_schedulable[:, None].astype(np.int64)]
        for key in sorted({k for lb in columns.labels for k in lb}):
            keys.append(columns.label_codes(key)[0][:, None].astype(np.int64))
        matrix = np.concatenate(keys, axis=1) if len(columns) else np.zeros((0, 1), dtype=np.int64)
        _, first, inverse = np.unique(matrix, axis=0, return_index=True, return_inverse=True)
        # Number classes by their lowest member, so class order follows machine order.
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        inverse = rank[inverse.reshape(-1)]
        order = np.argsort(inverse, kind="stable").astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(first)))]).astype(np.int64)
        return cls(np.sort(first).astype(np.int64), inverse.astype(np.int64), order, offsets)

    def __len__(self) -> int:
        return len(self.representatives)

    def members(self, c: int) -> np.ndarray:
        return self.order[self.offsets[c] : self.offsets[c + 1]]

    def columns_of(self, columns: MachineColumns) -> MachineColumns:
        """One row per class (its representative), on the same device."""
        r = self.representatives
        return MachineColumns(
            [columns.machine_ids[i] for i in r],
            columns.host_capacity[r],
            columns.host_used[r],
            [columns.labels[i] for i in r],
            columns.host_schedulable[r],
            xp=columns.xp,
        )


def score_topk_by_class(
    columns: MachineColumns,
    groups: Sequence[GroupSpec],
    policy: Policy,
    *,
    k: int | None = None,
    classes: EquivalenceClasses | None = None,
    **options,
) -> TopK:
    """``select.score_topk``, scoring each equivalence class once.

    Groups that avoid particular machines break class symmetry; those are scored per
    machine. Within a class, members are listed by ascending index.
    """
    k = policy.top_k if k is None else k
    classes = classes or EquivalenceClasses.of(columns)
    plain = [g for g in range(len(groups)) if not groups[g].avoid_machines]
    special = [g for g in range(len(groups)) if groups[g].avoid_machines]
    out_i = np.full((len(groups), k), -1, dtype=np.int64)
    out_s = np.full((len(groups), k), -np.inf, dtype=np.float32)
    if plain:
        top = score_topk(classes.columns_of(columns), [groups[g] for g in plain], policy, k=k, **options)
        for row, g in enumerate(plain):
            filled = 0
            for c, s in zip(top.indices[row], top.scores[row], strict=True):
                if c < 0 or filled == k:
                    break
                take = classes.members(int(c))[: k - filled]
                out_i[g, filled : filled + len(take)] = take
                out_s[g, filled : filled + len(take)] = s
                filled += len(take)
    if special:
        top = score_topk(columns, [groups[g] for g in special], policy, k=k, **options)
        out_i[special], out_s[special] = top.indices, top.scores
    return TopK(out_i, out_s)


