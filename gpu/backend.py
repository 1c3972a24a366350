"""Backend choice: which array module (``xp``) the kernels run on, decided once.

CuPy runs the kernels when ``cupy.cuda.is_available()`` and the problem is large enough
to pay for moving the columns to the device; NumPy runs them everywhere else. The
setting ``CELLSCHED_ARRAY_BACKEND`` (``numpy`` | ``cupy`` | ``auto``, default ``auto``)
forces either one. Every kernel is written once against ``xp``; CuPy is an optional
extra and is imported only when it is asked for or when ``auto`` probes for it.
"""

from __future__ import annotations

import functools
import os
from enum import Enum
from types import ModuleType

import numpy as np

from cellsched.cellstate.errors import CellError, InvalidInputError

ENV_VAR = "CELLSCHED_ARRAY_BACKEND"

# Below this many (machine, group) pairs the host-to-device copy and kernel launches
# cost more than NumPy spends scoring: about 1M pairs is where an H100-class GPU wins.
MIN_GPU_PAIRS = 1 << 20


class Backend(Enum):
    AUTO = "auto"
    NUMPY = "numpy"
    CUPY = "cupy"


class BackendUnavailableError(CellError, RuntimeError):
    """CuPy was forced by the setting, but no usable CUDA device is present."""


@functools.cache
def cupy_module() -> ModuleType | None:
    """The cupy module when it imports and sees a CUDA device, else None (probed once)."""
    try:
        import cupy  # noqa: PLC0415 - optional extra, imported only on demand
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return None
    try:
        return cupy if cupy.cuda.is_available() else None
    except Exception:
        return None


def cupy_usable() -> bool:
    return cupy_module() is not None


def backend_setting(value: str | Backend | None = None) -> Backend:
    """The configured backend: the argument, else the environment variable, else AUTO."""
    if isinstance(value, Backend):
        return value
    raw = (value if value is not None else os.environ.get(ENV_VAR, "auto")).strip().lower()
    try:
        return Backend(raw or "auto")
    except ValueError:
        allowed = "|".join(b.value for b in Backend)
        raise InvalidInputError(f"{ENV_VAR}={raw!r}: expected one of {allowed}") from None


def choose_array_module(pairs: int = 0, setting: str | Backend | None = None) -> ModuleType:
    """Pick ``xp`` for a problem of ``pairs`` (machines x task groups) scored pairs.

    NUMPY and CUPY force the module (CUPY raises BackendUnavailableError without a GPU);
    AUTO picks CuPy only when it is usable and ``pairs >= MIN_GPU_PAIRS``.
    """
    choice = backend_setting(setting)
    if choice is Backend.NUMPY:
        return np
    cp = cupy_module()
    if choice is Backend.CUPY:
        if cp is None:
            raise BackendUnavailableError(f"{ENV_VAR}=cupy, but cupy is not installed or sees no CUDA device")
        return cp
    return cp if cp is not None and pairs >= MIN_GPU_PAIRS else np


def is_cupy(xp: ModuleType) -> bool:
    return xp is not np and xp.__name__ == "cupy"


def to_host(array: object) -> np.ndarray:
    """A NumPy copy (or view) of a NumPy or CuPy array."""
    if hasattr(array, "get") and type(array).__module__.startswith("cupy"):
        return array.get()
    return np.asarray(array)
