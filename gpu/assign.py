"""Batch assignment: every task of a job, all groups, in one call.

The pipeline per group, one line per stage:
  1. eligibility  : labels, GPU model, anti-affinity, different-machines (``columns``)
  2. feasibility  : exact int64 fit against the batch's running free vectors
  3. scores       : the policy's weighted kernels, -inf where infeasible
  4. candidates   : the top L machines from one vectorised pass (L >= k)
  5. pick         : uniform among the k best, seeded from (job id, attempt), drawn from
                   the policy's home first (gpu/home.py); a group with no feasible
                   machine left at home looks at the whole cell in the same call
  6. batch assume : free[machine] -= request in this call's running free vectors; only
                   that machine's score changes

Step 6 is why one vectorised pass serves many tasks: placing a task changes one row, so
the candidates stay exact while their k-th best score is at least the best score left
outside them; when it is not, the pass is re-run on the updated columns. Every
placement is checked against the running free vector in exact integers, so the batch
never double-books a machine. The caller's columns are not modified: the result says
what to assume (``Assignment.used``, the touched rows' used vectors after the batch), and
the scheduler's cache (schedulers/cache.py) is what assumes it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from cellsched.cellstate.errors import InternalInvariantError

from . import kernels
from .backend import to_host
from .columns import MachineColumns, derived_columns
from .policy import Policy, Selection
from .reasons import Unplaceable, explain
from .select import machine_arrays, rng_for, seed_from, topk_rows
from .spec import GroupSpec

MAX_CANDIDATES = 4096  # L's ceiling: bounds the per-pass transfer and the heap
RANDOM_PROBES = 64  # Omega's random first fit probes this many machines before a full scan
PROBE_BLOCK = 256  # the probes of this many tasks of a group are drawn and checked at once


@dataclass(frozen=True)
class Assignment:
    """Where every task went.

    ``machines[g][i]`` is the machine index of task i of group g, or -1 when it could not
    be placed; ``unplaceable`` says why, one record per group with unplaced tasks.
    ``used`` maps every touched machine index to its used vector after the batch.
    """

    machines: tuple[np.ndarray, ...]
    unplaceable: tuple[Unplaceable, ...]
    used: dict[int, tuple[int, ...]]
    seed: int
    passes: int  # vectorised passes run (a cost metric)
    widened: int = 0  # groups that found their home full and were placed on the whole cell

    def placements(self) -> Iterator[tuple[int, int, int]]:
        """(group, task, machine index) for every placed task."""
        for g, rows in enumerate(self.machines):
            for i, m in enumerate(rows.tolist()):
                if m >= 0:
                    yield g, i, m

    @property
    def placed(self) -> int:
        return sum(int((rows >= 0).sum()) for rows in self.machines)

    def reason(self, group: int) -> Unplaceable | None:
        return next((u for u in self.unplaceable if u.group == group), None)


def assign_job(
    columns: MachineColumns,
    groups: Sequence[GroupSpec],
    policy: Policy,
    seed: tuple[str, int] | int,
) -> Assignment:
    """Place ``count`` tasks of every group, in group order, on ``columns``' machines.

    ``seed`` is (job id, attempt), or an int from ``select.seed_from``: the same columns,
    groups, policy and seed give the same assignment. The array module is the columns'.
    """
    run = _Batch(columns, groups, policy, seed if isinstance(seed, int) else seed_from(*seed))
    for g in range(len(groups)):
        run.place_group(g)
    rows = sorted(run.touched)
    used = dict(zip(rows, map(tuple, (columns.host_capacity[rows] - run.free[rows]).tolist()), strict=True))
    return Assignment(tuple(run.result), tuple(run.unplaceable), used, run.seed, run.passes,
                      0 if run.home_rows is None else sum(run.widened))


class _Batch:
    """The running state of one ``assign_job`` call."""

    def __init__(self, columns: MachineColumns, groups: Sequence[GroupSpec], policy: Policy, seed: int) -> None:
        self.columns, self.groups, self.policy, self.seed = columns, list(groups), policy, seed
        self.rng = rng_for(seed)
        # the scorers' weights; random first fit scores nothing (a job's decision starts here)
        self.weights = () if policy.selection is Selection.RANDOM_FIT else policy.normalised_weights()
        self.free = columns.host_free  # int64[N, R], the batch's running free vectors (a fresh array)
        self.touched: set[int] = set()
        self.dirty: set[int] = set()  # touched since the device copy was last refreshed
        self.arrays: kernels.MachineArrays | None = None
        self.occupied = [np.zeros(len(columns), dtype=bool) for _ in groups]
        self.result = [np.full(g.count, -1, dtype=np.int64) for g in groups]
        self.unplaceable: list[Unplaceable] = []
        self.passes = 0
        whole = policy.home.whole_cell
        self.home_rows: np.ndarray | None = None  # the home's rows; None: the whole cell
        self.home_device = None  # the home as a device mask
        if not whole:
            _, self.home_rows, self.home_device = columns.home(policy.home)
        self.widened = [whole] * len(self.groups)  # True once a group looks beyond its home
        self._fit: np.ndarray | None = None  # _place_random's running fit mask of the group placed now
        self.partners: list[set[int]] = [set() for _ in groups]  # anti-affinity is symmetric
        for g, spec in enumerate(groups):
            for h in spec.anti_affinity:
                if 0 <= h < len(groups) and h != g:
                    self.partners[g].add(h)
                    self.partners[h].add(g)

    # ---- per group ------------------------------------------------------------------
    def place_group(self, g: int) -> None:
        spec = self.groups[g]
        if spec.count == 0:
            return
        placer = self._place_random if self.policy.selection is Selection.RANDOM_FIT else self._place_top_k
        done = placer(g, spec)
        if done < spec.count:
            own = self.occupied[g] if spec.different_machines else np.zeros(len(self.columns), dtype=bool)
            self.unplaceable.append(
                explain(self.columns, self.free, spec, g, range(done, spec.count), self._avoid(g), own)
            )

    def _avoid(self, g: int) -> np.ndarray:
        avoid = np.zeros(len(self.columns), dtype=bool)
        for h in self.partners[g]:
            avoid |= self.occupied[h]
        return avoid

    def _excluded(self, g: int, spec: GroupSpec) -> np.ndarray:
        excluded = self._avoid(g)
        if spec.different_machines:
            excluded |= self.occupied[g]
        return excluded

    def _assume(self, g: int, task: int, machine: int, spec: GroupSpec, req: np.ndarray | None = None) -> None:
        new_free = self.free[machine] - (np.asarray(spec.request, dtype=np.int64) if req is None else req)
        if (new_free < 0).any():  # the invariant the whole module exists to keep
            raise InternalInvariantError(f"machine {machine} would be overcommitted")
        self.free[machine] = new_free
        self.touched.add(machine)
        self.dirty.add(machine)
        self.occupied[g][machine] = True
        self.result[g][task] = machine

    # ---- Omega's randomised first fit ---------------------------------------------------
    def _place_random(self, g: int, spec: GroupSpec) -> int:
        req = np.asarray(spec.request, dtype=np.int64)
        eligible = self.columns.host_eligibility(spec)  # a fresh array, changed below
        if self.partners[g]:  # the group's own machines are none yet: only its partners' are excluded
            eligible &= ~self._avoid(g)
        # eligible & fits, from the first scan on; then kept exact row by row, since placing
        # a task changes one machine's free vector (and, for different machines, its eligibility)
        self._fit = None
        probes = _Probes()
        for task in range(spec.count):
            machine = self._random_pick(g, eligible, req, probes, spec.count - task)
            if machine < 0:
                return task
            self._assume(g, task, machine, spec, req)
            probes.changed.add(machine)
            if spec.different_machines:
                eligible[machine] = False
            if self._fit is not None:
                self._fit[machine] = eligible[machine] and bool((self.free[machine] >= req).all())
        return spec.count

    def _random_pick(self, g: int, eligible: np.ndarray, req: np.ndarray, probes: _Probes, left: int) -> int:
        """Probe RANDOM_PROBES random machines of the home (the whole cell once widened);
        when none fits, scan the home and pick uniformly among what fits there; when
        nothing does, widen the group to the whole cell and scan that. -1: nothing fits.

        The probes of up to PROBE_BLOCK tasks are drawn and checked in one pass (one row
        per task): a machine this group changed since is checked again when its probe
        comes up, so each probe is judged on the free vectors of its own task's turn."""
        pool = None if self.widened[g] else self.home_rows
        size = len(self.columns) if pool is None else len(pool)
        if size:
            if probes.row >= len(probes.ok) or probes.pool is not pool:
                self._draw_probes(probes, pool, size, eligible, req, left)
            row = probes.row
            probes.row += 1
            ok, drawn = probes.ok[row], probes.machines[row]
            first = int(ok.argmax())  # the first probe that fitted, if any did
            if ok[first]:
                m = int(drawn[first])
                if m not in probes.changed:
                    return m
                for j in np.flatnonzero(ok).tolist():  # changed since the draw: check again
                    m = int(drawn[j])
                    if m not in probes.changed or (eligible[m] and bool((self.free[m] >= req).all())):
                        return m
        fit = self._fit
        if fit is None:
            fit = self._fit = eligible & (self.free >= req).all(axis=1)
        if pool is not None:
            at_home = pool[fit[pool]]
            if len(at_home):
                return int(at_home[self.rng.integers(len(at_home))])
            self.widened[g] = True  # the home is full for this group: the rest of it looks everywhere
        fits = np.flatnonzero(fit)
        if len(fits) == 0:
            return -1
        return int(fits[self.rng.integers(len(fits))])

    def _draw_probes(self, probes: _Probes, pool, size: int, eligible: np.ndarray, req: np.ndarray,
                     left: int) -> None:
        rows = min(left, PROBE_BLOCK)
        drawn = self.rng.integers(size, size=(rows, min(RANDOM_PROBES, size)))
        if pool is not None:
            drawn = pool[drawn]
        probes.machines = drawn
        probes.ok = eligible[drawn] & (self.free[drawn] >= req).all(axis=2)
        probes.pool, probes.row = pool, 0
        probes.changed = set()  # the block's checks are of now: nothing has changed since

    # ---- scored top-k ---------------------------------------------------------------------
    def _place_top_k(self, g: int, spec: GroupSpec) -> int:
        k = self.policy.top_k
        heap, outside = self._candidates(g, spec, spec.count)
        task = 0
        while task < spec.count:
            best = [heapq.heappop(heap) for _ in range(min(k, len(heap)))]
            exact = (len(best) == k or outside == -np.inf) and (not best or -best[-1][0] >= outside)
            if not exact:  # the candidates no longer hold the true top k: re-run the pass
                heap, outside = self._candidates(g, spec, spec.count - task)
                continue
            if not best:
                if self.widened[g]:
                    return task
                self.widened[g] = True  # nothing feasible left at home: look at the whole cell
                heap, outside = self._candidates(g, spec, spec.count - task)
                continue
            chosen = int(self.rng.integers(len(best)))
            machine = best[chosen][1]
            self._assume(g, task, machine, spec)
            task += 1
            for j, item in enumerate(best):
                if j != chosen:
                    heapq.heappush(heap, item)
            if not spec.different_machines:
                score = self._host_score(machine, spec)
                if score != -np.inf:
                    heapq.heappush(heap, (-score, machine))
        return task

    def _candidates(self, g: int, spec: GroupSpec, remaining: int) -> tuple[list[tuple[float, int]], float]:
        """One vectorised pass: a heap of (-score, machine) of the top L feasible machines,
        and the best score outside them (-inf when none)."""
        xp, n = self.columns.xp, len(self.columns)
        self.passes += 1
        limit = min(n, self.policy.top_k + min(remaining, MAX_CANDIDATES) + 32)
        eligible = self.columns.eligibility(spec)
        excluded = self._excluded(g, spec)
        if excluded.any():
            eligible = eligible & ~xp.asarray(excluded)
        if not self.widened[g]:
            eligible = eligible & self.home_device
        req = xp.asarray(np.asarray(spec.request, dtype=np.int64)[None, :])
        scores = kernels.combined_scores(xp, self._device_arrays(), req, self.weights, eligible)
        idx, vals = topk_rows(xp, scores, limit + 1)
        idx, vals = to_host(idx)[0], to_host(vals)[0].astype(np.float64)
        heap = [(-float(s), int(i)) for i, s in zip(idx[:limit], vals[:limit], strict=True) if i >= 0]
        heapq.heapify(heap)
        outside = float(vals[limit]) if len(vals) > limit else -np.inf
        return heap, outside

    def _device_arrays(self) -> kernels.MachineArrays:
        """The columns with this batch's placements applied, on the columns' device."""
        xp = self.columns.xp
        if self.arrays is None:
            base = machine_arrays(self.columns)
            self.arrays = kernels.MachineArrays(base.free_t.copy(), base.free_ft.copy(), *base[2:])
            self.dirty = set(self.touched)
        if self.dirty:
            rows = np.fromiter(sorted(self.dirty), dtype=np.int64)
            free_t, free_ft, _, _ = derived_columns(self.columns.host_capacity[rows], self.free[rows])
            d_rows = xp.asarray(rows)
            self.arrays.free_t[:, d_rows] = xp.asarray(free_t)
            self.arrays.free_ft[:, d_rows] = xp.asarray(free_ft)
            self.dirty.clear()
        return self.arrays

    def _host_score(self, machine: int, spec: GroupSpec) -> float:
        """The group's score on one machine after a placement, on the host."""
        row = slice(machine, machine + 1)
        free_t, free_ft, inv_cap_t, n_dims = derived_columns(self.columns.host_capacity[row], self.free[row])
        m = kernels.MachineArrays(free_t, free_ft, inv_cap_t, n_dims, np.ones(1, dtype=bool))
        req = np.asarray(spec.request, dtype=np.int64)[None, :]
        return float(kernels.combined_scores(np, m, req, self.weights)[0, 0])


class _Probes:
    """A group's block of drawn probes (``_Batch._draw_probes``): one row of machines per
    task, whether each fitted when drawn, and the machines changed since then."""

    __slots__ = ("machines", "ok", "pool", "row", "changed")

    def __init__(self) -> None:
        self.machines: np.ndarray = np.zeros((0, 0), dtype=np.int64)
        self.ok: np.ndarray = np.zeros((0, 0), dtype=bool)
        self.pool: np.ndarray | None = None
        self.row = 0
        self.changed: set[int] = set()
