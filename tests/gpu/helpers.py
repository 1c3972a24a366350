"""Shared helpers for the gpu tests: the array-module parameter and column builders."""

from __future__ import annotations

import numpy as np
import pytest

from cellsched.gpu import MachineColumns
from cellsched.gpu.backend import cupy_module
from cellsched.gpu.kernels import MachineArrays
from cellsched.gpu.reference import RefMachine
from cellsched.gpu.select import machine_arrays

NO_GPU = "no usable CUDA GPU (cupy missing or cupy.cuda.is_available() is False)"

# Every kernel test runs once per array module; the CuPy runs skip without a GPU.
XPS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("cupy", id="cupy", marks=[pytest.mark.cupy, pytest.mark.skipif(cupy_module() is None, reason=NO_GPU)]),
]

# Scores are float32 on the kernels and float64 in the reference; resources below 2**24
# convert exactly, so the only error is float32 rounding of a few operations on [0, 1].
SCORE_TOL = 1e-5


def resolve(name: str):
    return np if name == "numpy" else cupy_module()


def host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def columns(xp, capacity, used=None, labels=None, schedulable=None) -> MachineColumns:
    cap = np.asarray(capacity, dtype=np.int64).reshape(-1, 3)
    return MachineColumns([f"m{i}" for i in range(len(cap))], cap, used, labels, schedulable, xp=xp)


def arrays(cols: MachineColumns) -> MachineArrays:
    return machine_arrays(cols)


def ref_machines(cols: MachineColumns) -> list[RefMachine]:
    return [
        RefMachine(tuple(map(int, c)), tuple(map(int, u)), lb, bool(s))
        for c, u, lb, s in zip(cols.host_capacity, cols.host_used, cols.labels, cols.host_schedulable, strict=True)
    ]
