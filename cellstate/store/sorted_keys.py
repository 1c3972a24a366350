"""The memory store's keys in order (cellstate/store/memory.py), for its prefix reads.

A plain sorted list costs a memmove of the whole list per key added or removed: at a
whole cell's 100,000 keys (jobs, queue entries, claims, machines) that was a few percent
of a scheduler step's CPU. Here the keys are kept in sorted buckets of about LOAD keys, with
each bucket's first key, so a change moves one bucket's part and a range read bisects.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

LOAD = 512  # a bucket splits at twice this


class SortedKeys:
    """Distinct str keys in sorted order: add, discard, and the keys in [lo, hi)."""

    def __init__(self) -> None:
        self._buckets: list[list[str]] = []
        self._firsts: list[str] = []  # each bucket's first key

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def add(self, key: str) -> None:
        """Add a key that is not held (the store adds only new keys)."""
        if not self._buckets:
            self._buckets, self._firsts = [[key]], [key]
            return
        b = max(0, bisect_right(self._firsts, key) - 1)
        bucket = self._buckets[b]
        insort(bucket, key)
        self._firsts[b] = bucket[0]
        if len(bucket) > 2 * LOAD:
            half = bucket[LOAD:]
            del bucket[LOAD:]
            self._buckets.insert(b + 1, half)
            self._firsts.insert(b + 1, half[0])

    def discard(self, key: str) -> None:
        b = bisect_right(self._firsts, key) - 1
        if b < 0:
            return
        bucket = self._buckets[b]
        i = bisect_left(bucket, key)
        if i == len(bucket) or bucket[i] != key:
            return
        del bucket[i]
        if bucket:
            self._firsts[b] = bucket[0]
        else:
            del self._buckets[b]
            del self._firsts[b]

    def between(self, lo: str, hi: str | None, limit: int = 0) -> list[str]:
        """The keys k with lo <= k < hi (hi None: no upper bound), in order, at most
        `limit` of them (0: all)."""
        out: list[str] = []
        b = max(0, bisect_right(self._firsts, lo) - 1)
        for bucket in self._buckets[b:]:
            i = bisect_left(bucket, lo) if bucket[0] < lo else 0
            j = len(bucket) if hi is None or bucket[-1] < hi else bisect_left(bucket, hi)
            out += bucket[i:j]
            if limit and len(out) >= limit:
                return out[:limit]
            if j < len(bucket):
                break
        return out
