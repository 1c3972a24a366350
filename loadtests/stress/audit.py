"""Which commit path produced an overcommit: an observing wrapper around any engine class.

The invariant checker says *that* a machine is overcommitted; this says *how* the txn
that did it came about. It changes nothing: it only looks, when a chunk txn succeeded,
whether the allocation it wrote exceeds the machine's capacity, and files that txn by
- the plan's shape: one chunk or several (which one), commits in flight or not;
- the round: first send of the chunk, or a re-send after a conflict / unknown outcome;
- the view its compare used: the plan's own snapshot, or one refreshed during this
  commit (by an earlier chunk's reads, or this chunk's earlier round).
Overcommits that land through the lost-ack path (settled as landed) are not seen here;
the invariant checker still sees them.
"""

from __future__ import annotations

import threading
from collections import Counter

from cellsched.cellstate import resources as res
from cellsched.cellstate.commit import CommitEngine


def audited(engine_cls: type[CommitEngine], tally: Counter, lock: threading.Lock) -> type[CommitEngine]:
    """A subclass of `engine_cls` that files every overcommitting txn into `tally`."""

    class Audited(engine_cls):  # type: ignore[misc, valid-type]
        def commit(self, plan):
            # One engine commits one plan at a time (its scheduler's loop); chunks of a wave
            # run in pool threads, so per-chunk state is thread-local.
            self._plan_revs = {m: (v.spec_revision, v.alloc_revision) for m, v in plan.machines.items()}
            self._n_chunks = len(self._chunks(plan))
            self._tl = getattr(self, "_tl", None) or threading.local()
            self._started = 0
            return super().commit(plan)

        def _commit_chunk(self, chunk, machines, jobs, out, *rest):
            self._tl.round = 0
            with lock:
                self._started += 1
                self._tl.index = self._started
            return super()._commit_chunk(chunk, machines, jobs, out, *rest)

        def _build_txn(self, claims, machines, jobs, *rest):
            self._tl.round += 1
            return super()._build_txn(claims, machines, jobs, *rest)

        def _apply_success(self, claims, machines, jobs, new_allocs, new_jobs, revision, out):
            for mid, rec in new_allocs.items():
                view = machines[mid]  # still the view the txn compared
                if res.fits(res.ZERO, rec.used, view.machine.capacity):
                    continue
                own = self._plan_revs.get(mid) == (view.spec_revision, view.alloc_revision)
                where = "single-chunk plan" if self._n_chunks == 1 else (
                    "first chunk" if self._tl.index == 1 else "later chunk") + f" of {self._n_chunks}"
                label = (f"{self.conflict_mode.value}, in_flight={self.max_in_flight}: {where}, "
                         f"{'first send' if self._tl.round == 1 else f'round {self._tl.round}'}, "
                         f"{'plan view' if own else 'view refreshed during this commit'}")
                with lock:
                    tally[label] += 1
            return super()._apply_success(claims, machines, jobs, new_allocs, new_jobs, revision, out)

    Audited.__name__ = f"Audited{engine_cls.__name__}"
    return Audited
