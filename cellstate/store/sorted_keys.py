"""The memory store's keys in order, for its prefix reads (cellstate/store/memory.py).

One sorted Python list made every new key an O(n) insert: at 300,000 keys (a cell after a
few bulk submissions: each job writes its record and its queue entry) `bisect.insort`
measured about 78 us per key, the whole cost of a job in the Ray-hosted store and growing
with the cell (docs/architecture.md, "The REST API"). Here the keys are in sorted blocks of
at most 2 x LOAD: an insert or a delete moves at most one block's worth, a range read
walks the blocks in order.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

LOAD = 512


class SortedKeys:
    def __init__(self) -> None:
        self._blocks: list[list[str]] = []
        self._maxes: list[str] = []  # each block's last key
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, key: str) -> None:
        """Insert a key that is not there yet."""
        blocks, maxes = self._blocks, self._maxes
        self._len += 1
        if not blocks:
            blocks.append([key])
            maxes.append(key)
            return
        i = bisect.bisect_left(maxes, key)
        if i == len(maxes):
            i -= 1
            blocks[i].append(key)
            maxes[i] = key
        else:
            bisect.insort(blocks[i], key)
        block = blocks[i]
        if len(block) > 2 * LOAD:
            blocks.insert(i + 1, block[LOAD:])
            del block[LOAD:]
            maxes.insert(i, block[-1])

    def remove(self, key: str) -> None:
        """Remove a key that is there."""
        i = bisect.bisect_left(self._maxes, key)
        block = self._blocks[i]
        del block[bisect.bisect_left(block, key)]
        self._len -= 1
        if block:
            self._maxes[i] = block[-1]
        else:
            del self._blocks[i], self._maxes[i]

    def from_key(self, start: str) -> Iterator[str]:
        """Every key >= start, in order."""
        blocks = self._blocks
        i = bisect.bisect_left(self._maxes, start)
        if i == len(blocks):
            return
        block = blocks[i]
        yield from block[bisect.bisect_left(block, start):]
        for block in blocks[i + 1:]:
            yield from block
