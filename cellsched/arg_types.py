"""Argument types for the `cellsched` command line that refuse what makes no sense, by name.

argparse's bare `type=int` takes `--jobs -3` (which then sliced a trace to all but its last
three jobs), `--port 99999` (which printed an address and hung) and `--audit-chains -3`
(which silently turned the audit off). Each type here turns such a value into argparse's
usual "argument --X: ..." error and exit status 2, before anything starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from cellsched.cellstate.keys import CELL_NAME


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer in low..high (no upper bound when high is None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: it must be {span}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def positive_float(text: str) -> float:
    """A finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number above 0")
    return value


def cell_name(text: str) -> str:
    """A cell name as cellstate's keys take it (cellstate/keys.py): it becomes a key prefix."""
    if not CELL_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a cell name: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return text


PORT = int_at_least(0, 65535)  # 0: a free port, picked when the socket is bound
