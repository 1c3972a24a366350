"""Device-resident machine columns: the scheduler's local copy of the cell as arrays.

The host (NumPy) arrays are the source of truth, fed by the cell store's watch; the
device (``xp``) arrays mirror them and are refreshed row by row when next read, so a
watch event that changes three machines copies three rows, not the cell, and a caller
that reads only host arrays (random first fit) never pays for the device copies. Resources are exact int64 in
base units (``cellstate.resources``); only the derived float32 columns the scorers read
are floats.

Layouts: ``capacity``, ``used`` and ``free`` are ``int64[N, R]`` (a row per machine);
the kernels read the transposed ``*_t`` columns, ``[R, N]``, so that each resource is
one contiguous row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType

import numpy as np

from cellsched.cellstate import resources as res
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.model import AllocationRecord, Machine

from .backend import choose_array_module
from .home import Home, home_mask, machine_hashes
from .spec import GPU_MODEL_LABEL, GroupSpec

GPU_DIM = res.RESOURCE_NAMES.index("gpu")
_MISSING = -1  # label code of a machine without the label


class MachineColumns:
    """Capacity, used and free per machine, on the host and on the chosen device.

    ``xp`` is chosen once, here (``backend.choose_array_module``), unless given.
    """

    def __init__(
        self,
        machine_ids: Sequence[str],
        capacity: np.ndarray,
        used: np.ndarray | None = None,
        labels: Sequence[Mapping[str, str]] | None = None,
        schedulable: np.ndarray | None = None,
        *,
        xp: ModuleType | None = None,
        expected_groups: int = 1,
    ) -> None:
        n = len(machine_ids)
        self.machine_ids: list[str] = list(machine_ids)
        self.host_capacity = _int_matrix(capacity, n, "capacity")
        self.host_used = _int_matrix(np.zeros_like(self.host_capacity) if used is None else used, n, "used")
        self.labels: list[dict[str, str]] = _copy_labels(labels) if labels is not None else [{} for _ in range(n)]
        if len(self.labels) != n:
            raise InvalidInputError(f"labels: expected {n} rows, got {len(self.labels)}")
        sched = np.ones(n, dtype=bool) if schedulable is None else np.asarray(schedulable, dtype=bool).copy()
        if sched.shape != (n,):
            raise InvalidInputError(f"schedulable: expected shape ({n},), got {sched.shape}")
        self.host_schedulable = sched
        self.xp = xp if xp is not None else choose_array_module(n * max(1, expected_groups))
        self._label_codes: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
        self._eligibility: dict[tuple, object] = {}
        self._hashes: np.ndarray | None = None  # machine id hashes, for homes (ids never change here)
        self._homes: dict[Home, tuple[np.ndarray, np.ndarray, object]] = {}
        self._pending = np.zeros(n, dtype=bool)  # rows changed since the device arrays were last read
        self._any_pending: bool = False
        self._upload_all()

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_cell(
        cls,
        machines: Sequence[Machine],
        allocations: Mapping[str, AllocationRecord] | None = None,
        *,
        xp: ModuleType | None = None,
    ) -> MachineColumns:
        """Columns from the store's model objects (machines in the given order)."""
        allocations = allocations or {}
        zero = AllocationRecord()
        return cls(
            [m.id for m in machines],
            np.array([m.capacity for m in machines], dtype=np.int64).reshape(-1, res.NUM_RESOURCES),
            np.array([allocations.get(m.id, zero).used for m in machines], dtype=np.int64).reshape(-1, res.NUM_RESOURCES),
            [m.labels for m in machines],
            np.array([m.schedulable for m in machines], dtype=bool),
            xp=xp,
        )

    def __len__(self) -> int:
        return len(self.machine_ids)

    @property
    def host_free(self) -> np.ndarray:
        return self.host_capacity - self.host_used

    # ---- refresh --------------------------------------------------------------------
    def update_rows(self, indices: Sequence[int] | np.ndarray, used_rows: np.ndarray | Sequence) -> None:
        """New used vectors for some machines (an allocation record changed)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        rows = _int_matrix(used_rows, len(idx), "used_rows")
        self.host_used[idx] = rows
        self._upload_rows(idx)

    def update_machines(
        self,
        indices: Sequence[int] | np.ndarray,
        capacity_rows: np.ndarray | Sequence | None = None,
        labels: Sequence[Mapping[str, str]] | None = None,
        schedulable: Sequence[bool] | np.ndarray | None = None,
    ) -> None:
        """A machine record changed: capacity, labels or state (up / draining / down)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if capacity_rows is not None:
            self.host_capacity[idx] = _int_matrix(capacity_rows, len(idx), "capacity_rows")
        if schedulable is not None:
            self.host_schedulable[idx] = np.asarray(schedulable, dtype=bool)
        if labels is not None:
            for i, lb in zip(idx.tolist(), labels, strict=True):
                self.labels[i] = dict(lb)
            self._label_codes.clear()
        self._eligibility.clear()  # cheap to rebuild; labels or state may have changed
        self._upload_rows(idx)

    # ---- constraints ------------------------------------------------------------------
    def label_codes(self, key: str) -> tuple[np.ndarray, dict[str, int]]:
        """int32[N] codes of label ``key`` per machine (-1 where missing), and the code table."""
        cached = self._label_codes.get(key)
        if cached is None:
            table: dict[str, int] = {}
            codes = np.fromiter(
                (table.setdefault(lb[key], len(table)) if key in lb else _MISSING for lb in self.labels),
                dtype=np.int32,
                count=len(self.labels),
            )
            cached = self._label_codes[key] = (codes, table)
        return cached

    def host_eligibility(self, spec: GroupSpec) -> np.ndarray:
        """bool[N]: label and GPU-model constraints and avoided machines (not resources)."""
        ok = self.host_schedulable.copy()
        for key, value in spec.labels.items():
            codes, table = self.label_codes(key)
            ok &= codes == table.get(value, -2)
        if spec.gpu_models:
            codes, table = self.label_codes(GPU_MODEL_LABEL)
            allowed = np.array([table[m] for m in spec.gpu_models if m in table], dtype=np.int32)
            ok &= np.isin(codes, allowed)
        if spec.avoid_machines:
            avoid = np.fromiter(spec.avoid_machines, dtype=np.int64)
            ok[avoid[(avoid >= 0) & (avoid < len(ok))]] = False
        return ok

    def eligibility(self, spec: GroupSpec):
        """``host_eligibility`` on the device, cached per distinct constraint set."""
        key = spec.constraint_key
        mask = self._eligibility.get(key)
        if mask is None:
            mask = self._eligibility[key] = self.xp.asarray(self.host_eligibility(spec))
        return mask

    def home(self, home: Home) -> tuple[np.ndarray, np.ndarray, object]:
        """(host bool[N] mask, int64 rows, device mask) of the machines in ``home``
        (gpu/home.py), cached: a columns object's machine ids never change."""
        cached = self._homes.get(home)
        if cached is None:
            if self._hashes is None:
                self._hashes = machine_hashes(self.machine_ids)
            mask = home_mask(self._hashes, home)
            cached = self._homes[home] = (mask, np.flatnonzero(mask).astype(np.int64), self.xp.asarray(mask))
        return cached

    # ---- device mirror ------------------------------------------------------------------
    # The device arrays: read through these properties, which first copy the rows changed
    # since the last read. Random first fit reads only host arrays, so its many small
    # updates (one per assumed claim) never pay for the derived float columns.
    capacity = property(lambda self: self._device("_d_capacity"))
    used = property(lambda self: self._device("_d_used"))
    free = property(lambda self: self._device("_d_free"))
    schedulable = property(lambda self: self._device("_d_schedulable"))
    free_t = property(lambda self: self._device("_d_free_t"))
    free_ft = property(lambda self: self._device("_d_free_ft"))
    inv_cap_t = property(lambda self: self._device("_d_inv_cap_t"))
    n_dims = property(lambda self: self._device("_d_n_dims"))

    def _device(self, name: str):
        if self._any_pending:
            self._any_pending = False
            rows = np.flatnonzero(self._pending)
            self._pending[rows] = False
            self._copy_rows(rows)
        return getattr(self, name)

    def _upload_all(self) -> None:
        xp = self.xp
        self._d_capacity = xp.asarray(self.host_capacity)
        self._d_used = xp.asarray(self.host_used)
        self._d_free = self._d_capacity - self._d_used
        self._d_schedulable = xp.asarray(self.host_schedulable)
        free_t, free_ft, inv_cap_t, n_dims = derived_columns(self.host_capacity, self.host_free)
        self._d_free_t, self._d_free_ft = xp.asarray(free_t), xp.asarray(free_ft)
        self._d_inv_cap_t, self._d_n_dims = xp.asarray(inv_cap_t), xp.asarray(n_dims)

    def _upload_rows(self, idx: np.ndarray) -> None:
        if len(idx):
            self._pending[idx] = True
            self._any_pending = True

    def _copy_rows(self, idx: np.ndarray) -> None:
        """The host arrays' rows idx into the device arrays (and the derived columns)."""
        xp = self.xp
        cap, used = self.host_capacity[idx], self.host_used[idx]
        free_t, free_ft, inv_cap_t, n_dims = derived_columns(cap, cap - used)
        d_idx = xp.asarray(idx)
        self._d_capacity[d_idx] = xp.asarray(cap)
        self._d_used[d_idx] = xp.asarray(used)
        self._d_free[d_idx] = xp.asarray(cap - used)
        self._d_schedulable[d_idx] = xp.asarray(self.host_schedulable[idx])
        self._d_free_t[:, d_idx] = xp.asarray(free_t)
        self._d_free_ft[:, d_idx] = xp.asarray(free_ft)
        self._d_inv_cap_t[:, d_idx] = xp.asarray(inv_cap_t)
        self._d_n_dims[d_idx] = xp.asarray(n_dims)


def derived_columns(capacity: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The kernels' inputs from int64[N, R] capacity and free (host NumPy).

    free_t int64[R, N]; free_ft float32[R, N]; inv_cap_t float32[R, N] = 1/capacity
    (0 where capacity is 0, so that resource drops out of every score); n_dims
    float32[N] = how many resources the machine has.
    """
    cap = np.asarray(capacity, dtype=np.int64)
    with np.errstate(divide="ignore"):
        inv = np.where(cap > 0, 1.0 / np.maximum(cap, 1), 0.0)
    return (
        np.ascontiguousarray(free.T, dtype=np.int64),
        np.ascontiguousarray(free.T, dtype=np.float32),
        np.ascontiguousarray(inv.T, dtype=np.float32),
        (cap > 0).sum(axis=1).astype(np.float32),
    )


def _copy_labels(labels: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The columns' own copy of every row's labels: one copy per distinct dict given, so
    rows that share one (a scheduler cache's rows of one kind) share its copy. Rows are
    replaced (update_machines), never changed in place."""
    copies: dict[int, dict[str, str]] = {}
    out = []
    for lb in labels:
        c = copies.get(id(lb))  # every dict given stays alive meanwhile, so ids are unique
        if c is None:
            c = copies[id(lb)] = dict(lb)
        out.append(c)
    return out


def _int_matrix(values, rows: int, what: str) -> np.ndarray:
    arr = np.array(values, dtype=np.int64).reshape(-1, res.NUM_RESOURCES) if len(values) else np.zeros(
        (0, res.NUM_RESOURCES), dtype=np.int64
    )
    if arr.shape[0] != rows:
        raise InvalidInputError(f"{what}: expected {rows} rows of {res.NUM_RESOURCES}, got shape {arr.shape}")
    if (arr < 0).any():
        raise InvalidInputError(f"{what}: resources must be non-negative integers")
    return arr
