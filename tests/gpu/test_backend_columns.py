"""Backend choice, device columns and their row refresh, equivalence classes."""

from __future__ import annotations

import numpy as np
import pytest

from cellsched.cellstate.model import AllocationRecord, Machine, MachineState
from cellsched.gpu import (
    Backend,
    BackendUnavailableError,
    EquivalenceClasses,
    GroupSpec,
    MachineColumns,
    choose_array_module,
    cupy_usable,
    seed_from,
)
from cellsched.gpu.backend import ENV_VAR, MIN_GPU_PAIRS, backend_setting

from .helpers import XPS, columns, host, resolve


def test_backend_setting_reads_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "NumPy")
    assert backend_setting() is Backend.NUMPY
    monkeypatch.setenv(ENV_VAR, "gpu")
    with pytest.raises(ValueError, match="numpy"):
        backend_setting()


def test_choose_array_module_forced_numpy_even_when_large():
    assert choose_array_module(MIN_GPU_PAIRS * 10, "numpy") is np


@pytest.mark.skipif(cupy_usable(), reason="checks the no-GPU path")
def test_choose_array_module_without_gpu():
    assert choose_array_module(MIN_GPU_PAIRS * 10, "auto") is np
    with pytest.raises(BackendUnavailableError):
        choose_array_module(1, "cupy")


@pytest.mark.cupy
@pytest.mark.skipif(not cupy_usable(), reason="no usable CUDA GPU")
def test_choose_array_module_auto_uses_gpu_when_large():
    assert choose_array_module(MIN_GPU_PAIRS, "auto").__name__ == "cupy"
    assert choose_array_module(MIN_GPU_PAIRS - 1, "auto") is np


def test_seed_from_is_stable():
    # blake2b, not hash(): the same on every process and machine
    assert seed_from("job-1", 0) == seed_from("job-1", 0) != seed_from("job-1", 1)


@pytest.mark.parametrize("xp_name", XPS)
def test_machine_columns_update_rows_refreshes_only_those(xp_name):
    xp = resolve(xp_name)
    cols = columns(xp, [(4000, 8000, 0)] * 3)
    cols.update_rows([1], [(1000, 2000, 0)])
    # free = capacity - used on the changed row; the others untouched
    assert host(cols.free).tolist() == [[4000, 8000, 0], [3000, 6000, 0], [4000, 8000, 0]]
    assert host(cols.free_t)[:, 1].tolist() == [3000, 6000, 0]
    assert host(cols.free_ft).dtype == np.float32 and host(cols.free).dtype == np.int64
    cols.update_machines([2], capacity_rows=[(8000, 8000, 4)], labels=[{"zone": "b"}], schedulable=[False])
    assert host(cols.free)[2].tolist() == [8000, 8000, 4]
    assert host(cols.eligibility(GroupSpec((1, 0, 0), labels={"zone": "b"}))).tolist() == [False, False, False]


def test_machine_columns_from_cell():
    machines = [Machine("a", (4000, 8000, 0)), Machine("b", (2000, 4000, 2), {"zone": "x"}, MachineState.DRAINING)]
    cols = MachineColumns.from_cell(machines, {"b": AllocationRecord((500, 500, 1))}, xp=np)
    assert cols.host_free.tolist() == [[4000, 8000, 0], [1500, 3500, 1]]
    assert cols.host_schedulable.tolist() == [True, False]


def test_machine_columns_rejects_bad_shapes():
    with pytest.raises(ValueError, match="capacity"):
        MachineColumns(["a", "b"], [(1, 1, 1)], xp=np)


def test_equivalence_classes_group_identical_machines():
    # machines 0, 2, 3 identical; 1 differs by used, 4 by a label -> 3 classes
    cols = columns(
        np,
        [(4000, 8000, 0)] * 5,
        [(0, 0, 0), (1, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)],
        labels=[{}, {}, {}, {}, {"zone": "a"}],
    )
    classes = EquivalenceClasses.of(cols)
    assert len(classes) == 3
    assert classes.members(0).tolist() == [0, 2, 3]
    assert classes.inverse.tolist() == [0, 1, 0, 0, 2]


@pytest.mark.parametrize("xp_name", XPS)
def test_device_arrays_read_after_many_updates_equal_fresh_columns(xp_name):
    xp = resolve(xp_name)
    rng = np.random.default_rng(7)
    cap = rng.integers(1, 9, size=(20, 3)) * 1000
    cols = columns(xp, cap.tolist())
    for step in range(30):  # updates between reads, rows repeated, machines changed too
        rows = rng.integers(0, 20, size=int(rng.integers(1, 6)))
        cols.update_rows(rows, (cols.host_capacity[rows] * rng.random((len(rows), 1))).astype(np.int64))
        if step % 7 == 0:
            cols.update_machines(rows[:1], cols.host_capacity[rows[:1]] + 1000, schedulable=[step % 2 == 0])
        if step % 4 == 0:
            continue  # not read: the next read copies these rows too
        fresh = columns(xp, cols.host_capacity.tolist(), cols.host_used.tolist(), schedulable=cols.host_schedulable)
        for name in ("capacity", "used", "free", "schedulable", "free_t", "free_ft", "inv_cap_t", "n_dims"):
            assert np.array_equal(host(getattr(cols, name)), host(getattr(fresh, name))), (step, name)
