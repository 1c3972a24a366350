"""Human resource units -> the cell's integer base units (cellstate/resources.py).

CPU in milli-CPU: "500m" is 500, "2" or 2 is 2000, "1.5" is 1500. Memory in MiB:
"2Gi" is 2048, "512Mi" 512, "1G" (decimal) rounds up to 954, a bare integer is MiB.
GPUs are whole (a fraction is refused). Amounts finer than a base unit round up, never
down: a task gets at least what it asked for.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from fractions import Fraction

from cellsched.cellstate.errors import InvalidInputError

_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")

# Memory suffixes in bytes (Kubernetes' quantities).
_MEMORY_BYTES = {"": 1 << 20, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
                 "K": 10**3, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_MIB = 1 << 20
MAX_CPU_MILLI = 10**9  # a million cores: anything above is a typo, not a machine
MAX_MEMORY_MIB = 2**40  # an exbibyte
MAX_GPUS = 4096


def _split(value: object, what: str) -> tuple[Fraction, str]:
    if isinstance(value, bool):
        raise InvalidInputError(f"{what} must be a number or a quantity string, not a boolean")
    if isinstance(value, int):
        return _non_negative(Fraction(value), what), ""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{what} must be finite")
        return _non_negative(Fraction(str(value)), what), ""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a number or a quantity string like '500m'")
    m = _QUANTITY.match(value)
    if not m:
        raise InvalidInputError(f"{what}: {value!r} is not a quantity (e.g. '500m', '2', '2Gi')")
    return Fraction(m.group(1)), m.group(2)


def _non_negative(amount: Fraction, what: str) -> Fraction:
    if amount < 0:
        raise InvalidInputError(f"{what} must not be negative")
    return amount


def _memo(parse: Callable[[object], int]) -> Callable[[object], int]:
    """The parsers are pure, and a bulk body repeats a few spellings ("500m", "2Gi") thousands
    of times: each spelling of type str, int or float is parsed once. Anything else (a boolean,
    a list: unhashable) goes to the parser itself, which refuses it; a refusal raises, and
    raising caches nothing. typed=True keeps 1 apart from 1.0."""
    cached = functools.lru_cache(maxsize=4096, typed=True)(parse)

    @functools.wraps(parse)
    def memoized(value: object) -> int:
        return cached(value) if type(value) in (str, int, float) else parse(value)

    return memoized


@_memo
def cpu_milli(value: object) -> int:
    amount, suffix = _split(value, "cpu")
    if suffix == "m":
        milli = amount
    elif suffix == "":
        milli = amount * 1000
    else:
        raise InvalidInputError(f"cpu: unknown suffix {suffix!r} (use 'm' for milli-CPU, or none for cores)")
    return _bounded("cpu", math.ceil(milli), MAX_CPU_MILLI)  # finer than a milli-CPU: rounds up


@_memo
def memory_mib(value: object) -> int:
    amount, suffix = _split(value, "memory")
    if suffix not in _MEMORY_BYTES:
        raise InvalidInputError(f"memory: unknown suffix {suffix!r} (use Ki, Mi, Gi, Ti, K, M, G, T; none means Mi)")
    mib = amount * _MEMORY_BYTES[suffix] / _MIB
    return _bounded("memory", math.ceil(mib), MAX_MEMORY_MIB)


def no_bool(value: object) -> object:
    """For integer fields: JSON's 2.0 is an integer, a boolean is not (Pydantic's lax mode takes
    true as 1)."""
    if isinstance(value, bool):
        raise InvalidInputError("expected an integer, got a boolean")
    return value


@_memo
def gpus(value: object) -> int:
    amount, suffix = _split(value, "gpu")
    if suffix or amount.denominator != 1:
        raise InvalidInputError(f"gpu: {value!r} must be a whole number of GPUs")
    return _bounded("gpu", int(amount), MAX_GPUS)


def _bounded(what: str, value: int, most: int) -> int:
    if value > most:
        raise InvalidInputError(f"{what}: {value} base units is above the limit of {most}")
    return value


def format_cpu(milli: int) -> str:
    return f"{milli // 1000}" if milli % 1000 == 0 else f"{milli}m"


def format_memory(mib: int) -> str:
    return f"{mib // 1024}Gi" if mib and mib % 1024 == 0 else f"{mib}Mi"
