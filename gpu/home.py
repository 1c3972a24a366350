"""A scheduler's home: the share of the cell it picks machines from first.

Two schedulers deciding the same kind of batch at once otherwise pick machines from the
same distribution, so nearly every pair of concurrent commit txns touches a common machine
and one of them fails its compares (Omega's conflicts). Giving each of ``count``
schedulers a disjoint home, the machines whose id hashes to its ``index``, makes their
picks disjoint while the homes have room (Sparrow's and Borg's relaxed randomisation:
each scheduler samples its own candidates). The home is a preference, never a
constraint: a group that finds no feasible machine there is placed on the whole cell in
the same call, so a job that fits only outside a scheduler's home still places on its
first attempt.

The bucket of a machine depends only on its id (a stable 64-bit hash), never on the row
order of a scheduler's copy, so schedulers whose copies list machines differently agree
on every home.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cellsched.cellstate.errors import InvalidInputError


@dataclass(frozen=True)
class Home:
    """Home ``index`` of ``count`` disjoint homes; ``count == 1`` is the whole cell."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 1:
            raise InvalidInputError(f"home count {self.count!r}: must be an integer >= 1")
        if not isinstance(self.index, int) or not 0 <= self.index < self.count:
            raise InvalidInputError(f"home index {self.index!r}: must be an integer in 0..{self.count - 1}")

    @property
    def whole_cell(self) -> bool:
        return self.count == 1


WHOLE_CELL = Home()


def machine_hashes(machine_ids: Sequence[str]) -> np.ndarray:
    """uint64[N]: a stable hash per machine id (the same in every process)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(m.encode(), digest_size=8).digest(), "little") for m in machine_ids),
        dtype=np.uint64, count=len(machine_ids))


def home_mask(hashes: np.ndarray, home: Home) -> np.ndarray:
    """bool[N]: the machines in ``home``."""
    if home.whole_cell:
        return np.ones(len(hashes), dtype=bool)
    return (hashes % np.uint64(home.count)) == np.uint64(home.index)
