"""The order of a benchmark's modes in each round: forward in even rounds, backward in odd
ones (A B, B A, A B, ...).

Why: on these shared virtual machines the speed drifts within one invocation (a 6-round
`bench_api --tracing off,file` run measured the untraced API at 617 CPU us per request in its
first round and 1,230 in its last, each round slower than the one before). With the same order
in every round the mode run first always meets the faster machine; reversing every other round
cancels a steady drift over each pair of rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def round_order(modes: Sequence[T], rnd: int) -> list[T]:
    """`modes` in the order round `rnd` (0-based) runs them."""
    return list(modes) if rnd % 2 == 0 else list(reversed(modes))
