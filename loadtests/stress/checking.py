"""The invariant checker of a stress run: cellstate.invariants.check_store, run after every
committed write (memory store) or on a period (etcd), recording what it finds.

A violation usually persists once it happens (an overcommitted machine stays so until a
release), so each distinct message is kept once, with the context of the check that first
saw it: which writer's write exposed it, at what revision, and the faults injected just
before. That context is what says which fault or scenario triggers a violation.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import types
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from cellsched.cellstate import codec, invariants
from cellsched.cellstate.errors import StoreUnavailableError
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import CellStore, Delete, Op, Put, TxnResult

RECENT_FAULTS = 32
RECENT_WINDOW_S = 2.0
DECODE_MEMO = 16_384


@contextmanager
def memoized_decoding() -> Iterator[None]:
    """While active, check_store decodes each distinct stored value once.

    A check after every write re-reads the whole cell, but a write changes only a few
    records, and decoding is most of a check's cost (measured: about 5x more writes per
    second with the memo). Decoding is a pure function of (key, value bytes), and
    check_store only reads machines and allocations (a job record it gets as a copy, since
    it attaches the job's binding shards to it), so a memo keyed by both is exact; a value
    that fails to decode raises every time, as before (lru_cache keeps no exceptions).
    """
    memo = types.SimpleNamespace(**{n: getattr(codec, n) for n in dir(codec) if not n.startswith("__")})
    for name in ("decode_alloc", "decode_machine"):
        setattr(memo, name, functools.lru_cache(maxsize=DECODE_MEMO)(getattr(codec, name)))
    job = functools.lru_cache(maxsize=DECODE_MEMO)(codec.decode_job)
    memo.decode_job = lambda key, value: job(key, value).copy()  # the checker fills in shards: a copy each
    saved = invariants.codec
    invariants.codec = memo  # type: ignore[assignment]
    try:
        yield
    finally:
        invariants.codec = saved


def describe_write(keys: CellKeys, ops: Sequence[Op]) -> str:
    """What a txn wrote, by key family: e.g. 'put alloc x3, put jobs x1, delete claims x1'."""
    counts: dict[str, int] = {}
    for op in ops:
        if type(op) not in (Put, Delete):
            continue
        rest = op.key[len(keys.root):]
        family = rest.split("/", 2)
        name = family[1] if family[0] == "node" and len(family) > 1 else family[0]
        label = f"{'put' if type(op) is Put else 'delete'} {name}"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


def violation_kind(message: str) -> str:
    """A message without its ids and numbers, to group violations by kind."""
    return re.sub(r"\s+", " ", re.sub(r"[\w.:-]*\d[\w.:/-]*|\([^)]*\)|\[[^]]*\]", "#", message)).strip()


def violation_subject(message: str) -> str:
    """A message without its vectors and counts: the same machine staying overcommitted while
    its used vector changes is one violation, not one per release."""
    return re.sub(r"\([^)]*\)|\[[^]]*\]|^\d+ ", "#", message)


class InvariantRecorder:
    def __init__(self, store: CellStore, keys: CellKeys, max_messages: int = 20):
        self.store = store
        self.keys = keys
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._expected: set[str] = set()
        self._recent: deque[tuple[float, str, str]] = deque(maxlen=RECENT_FAULTS)  # (time, source, kind)
        self.checks = 0
        self.violating_checks = 0
        self.seen: dict[str, dict] = {}  # subject -> context of the first check that saw it
        self.kinds: dict[str, int] = {}  # violation kind -> distinct subjects of that kind
        self.outages = 0  # checks that could not read the store
        self.onsets = 0  # subjects that appeared in a check while absent from the one before
        self._active: set[str] = set()  # subjects the last check reported

    # -- what the checker expects -------------------------------------------------

    def accept(self, job_ids: Iterable[str]) -> None:
        """Jobs the store acknowledged: from now on each must be in the store, in a valid state."""
        with self._lock:
            self._expected.update(job_ids)

    def unexpect(self, job_ids: Iterable[str]) -> None:
        """Jobs about to be purged on purpose (call before the delete, so no check misses them)."""
        with self._lock:
            self._expected.difference_update(job_ids)

    @property
    def expected(self) -> set[str]:
        with self._lock:
            return set(self._expected)

    def fault(self, source: str, kind: str) -> None:
        with self._lock:
            self._recent.append((time.monotonic(), source, kind))

    # -- checking -------------------------------------------------------------------

    def hook(self, source: str):
        """An after_write hook for FaultInjectingStore that checks and names `source`."""
        def after_write(ops: Sequence[Op], result: TxnResult) -> None:
            self.check(source, describe_write(self.keys, ops), result.revision)
        return after_write

    def check(self, source: str, write: str = "", revision: int = 0):
        expected = self.expected
        try:
            rep = check_store(self.store, self.keys, expected)
            violations = rep.violations
        except StoreUnavailableError:  # e.g. an etcd leader change: no reading, no finding
            with self._lock:
                self.outages += 1
            return None
        except Exception as exc:  # a checker that cannot read the cell is itself a finding
            rep, violations = None, [f"checker error: {exc!r}"]
        with self._lock:
            self.checks += 1
            subjects = {violation_subject(m): m for m in violations}
            self.onsets += len(subjects.keys() - self._active)
            self._active = set(subjects)
            if not violations:
                return rep
            self.violating_checks += 1
            now = time.monotonic()
            # The writer's own faults just before, and how many others had faults meanwhile.
            own = [kind for t, src, kind in self._recent if src == source and now - t <= RECENT_WINDOW_S]
            others = sum(1 for t, src, _ in self._recent if src != source and now - t <= RECENT_WINDOW_S)
            for subject, msg in subjects.items():
                if subject in self.seen:
                    continue
                kind = violation_kind(msg)
                self.kinds[kind] = self.kinds.get(kind, 0) + 1
                self.seen[subject] = {"message": msg, "after_write_by": source, "write": write,
                                      "revision": revision or (rep.revision if rep else 0), "check": self.checks,
                                      "writer_recent_faults": own[-8:], "others_recent_faults": others}
        return rep

    def final_check(self, attempts: int = 20):
        """The end-of-run check, retried through a store outage."""
        for _ in range(attempts):
            before = self.outages
            rep = self.check("final")
            if self.outages == before:  # it read the store (and found what it found)
                return rep
            time.sleep(0.25)
        return None

    # -- results --------------------------------------------------------------------

    def summary(self) -> dict:
        with self._lock:
            first = list(self.seen.values())[: self.max_messages]
            return {"violations": [v["message"] for v in first], "violation_count": len(self.seen),
                    "violation_onsets": self.onsets,
                    "violation_kinds": dict(self.kinds), "violations_first_seen": first,
                    "checks": self.checks, "violating_checks": self.violating_checks,
                    "check_outages": self.outages}
