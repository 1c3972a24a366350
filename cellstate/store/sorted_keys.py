"""The memory store's keys in order (cellstate/store/memory.py), for its prefix reads.

A plain sorted list costs a memmove of the whole list per key added or removed: at a
whole cell's 100,000 keys (jobs, queue entries, claims, machines) that was a few percent
of a scheduler step's CPU. Here the keys are kept in sorted buckets of about LOAD keys, with
each bucket's first key, so a change moves one bucket's part and a range read bisects.

Keys are also split by kind: a key's **partition** is the key up to its third "/"
(`/<cell>/jobs/`, `/<cell>/queue/`, ...; the key schema of cellstate/keys.py), and each
partition is sorted on its own and lazily: keys added since its last read wait unsorted
and are merged in when a read reaches the partition. Bulk submissions add hundreds of
thousands of job records with random ids that only a listing or the retention sweep ever
reads in order; inserting each into its place was 40% of the Ray-hosted store's CPU under
bulk load (random places in a big structure: a cache miss per comparison). Partition
prefixes are prefix-free (each ends at its own third "/"), so their key ranges are
disjoint and a read concatenates them in prefix order; keys with fewer than three "/"
share one catch-all partition, merged into the result.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort

LOAD = 512  # a bucket splits at twice this
_REBUILD_SHARE = 8  # settle by sorting everything again when pending is over 1/8 of the sorted keys


def partition_of(key: str) -> str:
    """The key up to and including its third "/" ("" when it has fewer: the catch-all)."""
    first = key.find("/")
    second = key.find("/", first + 1) if first >= 0 else -1
    third = key.find("/", second + 1) if second >= 0 else -1
    return key[:third + 1] if third >= 0 else ""


class _Sorted:
    """Distinct keys in sorted buckets, with keys added since the last read pending."""

    def __init__(self) -> None:
        self._buckets: list[list[str]] = []
        self._firsts: list[str] = []  # each bucket's first key
        self._count = 0  # keys in the buckets
        self._pending: set[str] = set()  # added, not sorted in yet

    def __len__(self) -> int:
        return self._count + len(self._pending)

    def add(self, key: str) -> None:
        self._pending.add(key)

    def discard(self, key: str) -> None:
        if key in self._pending:
            self._pending.discard(key)
            return
        b = bisect_right(self._firsts, key) - 1
        if b < 0:
            return
        bucket = self._buckets[b]
        i = bisect_left(bucket, key)
        if i == len(bucket) or bucket[i] != key:
            return
        del bucket[i]
        self._count -= 1
        if bucket:
            self._firsts[b] = bucket[0]
        else:
            del self._buckets[b]
            del self._firsts[b]

    def _settle(self) -> None:
        pending = self._pending
        if not pending:
            return
        if len(pending) * _REBUILD_SHARE > self._count:
            keys = sorted([k for bucket in self._buckets for k in bucket] + list(pending))
            self._buckets = [keys[i:i + LOAD] for i in range(0, len(keys), LOAD)]
            self._firsts = [bucket[0] for bucket in self._buckets]
            self._count = len(keys)
        else:
            for key in sorted(pending):
                self._insert(key)
        self._pending = set()

    def _insert(self, key: str) -> None:
        if not self._buckets:
            self._buckets, self._firsts = [[key]], [key]
            self._count = 1
            return
        b = max(0, bisect_right(self._firsts, key) - 1)
        bucket = self._buckets[b]
        insort(bucket, key)
        self._count += 1
        self._firsts[b] = bucket[0]
        if len(bucket) > 2 * LOAD:
            half = bucket[LOAD:]
            del bucket[LOAD:]
            self._buckets.insert(b + 1, half)
            self._firsts.insert(b + 1, half[0])

    def between(self, lo: str, hi: str | None, limit: int = 0) -> list[str]:
        self._settle()
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


class SortedKeys:
    """Distinct str keys in sorted order: add, discard, and the keys in [lo, hi)."""

    def __init__(self) -> None:
        self._parts: dict[str, _Sorted] = {}
        self._prefixes: list[str] = []  # the partitions' prefixes but the catch-all's, sorted

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts.values())

    def add(self, key: str) -> None:
        """Add a key that is not held (the store adds only new keys)."""
        prefix = partition_of(key)
        part = self._parts.get(prefix)
        if part is None:
            part = self._parts[prefix] = _Sorted()
            if prefix:
                insort(self._prefixes, prefix)
        part.add(key)

    def discard(self, key: str) -> None:
        part = self._parts.get(partition_of(key))
        if part is not None:
            part.discard(key)  # an emptied partition stays: cheap, and it is likely to be used again

    def between(self, lo: str, hi: str | None, limit: int = 0) -> list[str]:
        """The keys k with lo <= k < hi (hi None: no upper bound), in order, at most
        `limit` of them (0: all)."""
        out: list[str] = []
        prefixes = self._prefixes
        # A partition's keys lie in [prefix, prefix with its last "/" bumped to "0"): start at
        # the last prefix <= lo (lo may fall inside it), stop at the first one >= hi.
        k = max(0, bisect_right(prefixes, lo) - 1)
        for prefix in prefixes[k:]:
            if hi is not None and prefix >= hi:
                break
            if prefix[:-1] + "0" <= lo:
                continue  # wholly below lo
            out += self._parts[prefix].between(lo, hi, limit - len(out) if limit else 0)
            if limit and len(out) >= limit:
                break
        rest = self._parts.get("")
        if rest is not None and len(rest):
            out = list(heapq.merge(out, rest.between(lo, hi, limit)))
        return out[:limit] if limit else out
