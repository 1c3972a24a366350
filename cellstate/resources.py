"""Resource vectors: exact integers in base units.

Every fit check and every "used = sum of requests" check is integer arithmetic; floats
exist only in scores. Base units: cpu in milli-CPU (Google's normalised CPU x 10^6 for
trace replays), memory in MiB (normalised x 10^6 for traces), gpu in whole GPUs.

A vector is a plain tuple of ints in RESOURCE_NAMES order: tuples are hashable, cheap
to build on hot paths and map directly onto NumPy columns. To add a resource, append
its name here; stored records name their resources, so older records still decode.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .errors import InvalidResourceError

RESOURCE_NAMES: tuple[str, ...] = ("cpu", "memory", "gpu")
NUM_RESOURCES = len(RESOURCE_NAMES)
ZERO: tuple[int, ...] = (0,) * NUM_RESOURCES

Vector = tuple[int, ...]

# Google 2011 normalises CPU and memory so the largest machine is 1.0; we keep 6 digits.
TRACE_SCALE = 1_000_000


def validate_amount(name: str, value: object, where: str = "") -> int:
    """Return value as a non-negative int, or raise naming the resource and place."""
    label = f"{where}.{name}" if where else name
    if isinstance(value, bool):
        raise InvalidResourceError(f"{label}: expected an integer, got a boolean")
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise InvalidResourceError(f"{label}: {value} is not a finite number")
        if not value.is_integer():
            raise InvalidResourceError(f"{label}: {value} is not an integer in base units")
        value = int(value)
    if not isinstance(value, int):
        raise InvalidResourceError(f"{label}: expected an integer, got {type(value).__name__}")
    if value < 0:
        raise InvalidResourceError(f"{label}: {value} is negative")
    return value


def from_list(values: Iterable[object], where: str = "") -> Vector:
    values = list(values)
    if len(values) != NUM_RESOURCES:
        raise InvalidResourceError(f"{where or 'vector'}: expected {NUM_RESOURCES} amounts, got {len(values)}")
    return tuple(validate_amount(n, v, where) for n, v in zip(RESOURCE_NAMES, values, strict=True))


def check_vector(values: object, where: str = "") -> Vector:
    """Fast path for hot loops: a well-formed tuple passes through; anything else gets
    the full validation and its precise error."""
    if type(values) is tuple and len(values) == NUM_RESOURCES:
        for x in values:  # a plain loop: all() over a generator costs twice as much here
            if type(x) is not int or x < 0:
                break
        else:
            return values
    return from_list(values, where)  # type: ignore[arg-type]


def as_dict(v: Vector) -> dict[str, int]:
    return dict(zip(RESOURCE_NAMES, v, strict=True))


def add(a: Vector, b: Vector) -> Vector:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def fits(request: Vector, used: Vector, capacity: Vector) -> bool:
    """Exact: used + request <= capacity in every dimension."""
    return all(u + r <= c for r, u, c in zip(request, used, capacity, strict=True))


def dominates(capacity: Vector, request: Vector) -> bool:
    return all(c >= r for c, r in zip(capacity, request, strict=True))
