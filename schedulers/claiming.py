"""The scheduler's side of the queue: claims from the queue's head, the parked index when
capacity freed, the next batch prefetched in the background, and the need a parked job
records (docs/architecture.md, "Claims, parking and crash safety").

`Claimer` owns the claim state of one scheduler (thread pools, the prefetch, the parked
cursor, whether orphans may exist); the scheduler loop (schedulers/core.py) owns the lease
and the held jobs, and passes them in.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sized
from concurrent.futures import Future, ThreadPoolExecutor

from cellsched.cellstate.claims import (
    CLAIM_PAGE,
    IndexEntry,
    Patience,
    claim_entries,
    claim_jobs,
)
from cellsched.cellstate.clock import Clock
from cellsched.cellstate.errors import LeaseNotFoundError, StoreUnavailableError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobRecord, task_id
from cellsched.cellstate.queue_segments import drop_claims
from cellsched.cellstate.resources import Vector
from cellsched.cellstate.store import CellStore
from cellsched.cellstate.views import JobView

from .settings import SchedulerSettings

# A parked look that is due while the queue fills every batch takes this fraction of it.
PARKED_SHARE = 4
# A pipelined scheduler that holds nothing (a cold start, or a queue that was empty) claims this
# fraction of a big batch first, so that deciding and committing it overlaps the prefetch's
# claim of the next whole batch instead of waiting for all of it (k8s case: claiming 4,096 jobs
# took a third of the run, none of it overlapped).
COLD_START_SLICE = 8
COLD_START_MIN_BATCH = 512  # smaller batches claim whole: a slice would save little


def smallest_need(rec: JobRecord) -> Vector:
    """The least a machine must have free for the job to place one more task: the
    elementwise minimum of its unplaced groups' requests (a lower bound, so a retry is
    never skipped when it could succeed). Recorded in the job's parked entry."""
    placed = set(rec.bound) | rec.done
    need: list[int] | None = None
    for gi, g in enumerate(rec.job.groups):
        if all(task_id(rec.job.id, gi, i) in placed for i in range(g.count)):
            continue
        need = list(g.request) if need is None else [min(a, b) for a, b in zip(need, g.request, strict=True)]
    return tuple(need) if need is not None else tuple(0 for _ in rec.job.groups[0].request)


class _Either:
    """In one container or the other (held jobs, or the ids of segments we hold)."""

    __slots__ = ("a", "b")

    def __init__(self, a: Container[str], b: Container[str]):
        self.a, self.b = a, b

    def __contains__(self, x: object) -> bool:
        return x in self.a or x in self.b


class Claimer:
    def __init__(self, name: str, store: CellStore, keys: CellKeys, settings: SchedulerSettings, clock: Clock):
        self.name = name
        self.store = store
        self.keys = keys
        self.settings = settings
        self.clock = clock
        # With txns in flight, claim txns go out concurrently too, and the next batch is claimed
        # in the background while this one is decided and committed (start_prefetch).
        pipelined = settings.txns_in_flight > 1
        self._claim_pool = ThreadPoolExecutor(settings.txns_in_flight, f"{name}-claim") if pipelined else None
        self._prefetch_pool = ThreadPoolExecutor(1, f"{name}-prefetch") if pipelined else None
        self._prefetch: tuple[int, Future] | None = None  # (lease id, claim_jobs future)
        self._freed = False  # capacity freed since parked jobs were last retried
        # A claim call was cut short: look for claims we hold unknowingly.
        self._orphans_possible = False
        self._parked_cursor = ""  # where the next look at the parked index starts
        self.parked_rounds = 0  # complete passes over the parked index: every entry had its look
        self._parked_tried_at = clock.now()
        # Other shares' queue entries as the last claim saw them (cellstate.claims.claim_jobs).
        self._patience: Patience = {}
        # Our claim keys (one per claim txn) whose jobs the loop held: each is deleted once
        # the loop holds none of its jobs any more.
        self._claims: set[str] = set()
        # The queue segments our claims took (cellstate/queue_segments.py): claim id -> segment
        # key -> its revision at the claim; deleted with the claim key. And their ids, which end
        # their keys: a claim step skips them, as it skips the held jobs.
        self._segments: dict[str, dict[str, int]] = {}
        self._segment_ids: dict[str, str] = {}  # segment id -> claim id

    def note_claims(self, views: Iterable[JobView]) -> None:
        """The loop holds these views' jobs now, under their claims."""
        for v in views:
            if v.claim:
                self._claims.add(v.claim)
                if v.record.segment:
                    self._segments.setdefault(v.claim, {})[self.keys.queue_of(v.record)] = v.claim_revision
                    self._segment_ids[v.record.segment] = v.claim

    def drop_settled_claims(self, held: Iterable) -> None:
        """Delete our claim keys none of whose jobs the loop holds (`held`: its HeldJobs), with
        the segments they took."""
        settled = self._claims - {h.claim for h in held}
        if settled:
            segments = {k: rev for cid in settled for k, rev in self._segments.get(cid, {}).items()}
            drop_claims(self.store, self.keys, settled, segments)
            self._forget(settled)

    def forget_claims(self) -> None:
        """The lease expired: our claim keys went with it (the segments they took are anyone's)."""
        self._forget(set(self._claims))

    def _forget(self, claim_ids: set[str]) -> None:
        self._claims -= claim_ids
        for cid in claim_ids:
            self._segments.pop(cid, None)
        self._segment_ids = {h: c for h, c in self._segment_ids.items() if c not in claim_ids}

    def _skipping(self, held: Container[str]) -> Container[str]:
        return _Either(held, self._segment_ids) if self._segment_ids else held

    def capacity_freed(self) -> None:
        """The cache saw capacity free: look at the parked index on the next claim that has room."""
        self._freed = True

    def claim(self, lease_id: int, room: int, held: Container[str], free_rows) -> list[JobView]:
        """Claim up to `room` jobs: the queue from its head, and the parked jobs whose need
        fits on some row of `free_rows()`, when capacity freed and the queue left room, or
        every parked_retry_s in any case (then with a share of the batch kept for them, so a
        queue that never drains cannot starve the parked jobs either). LeaseNotFoundError
        when the lease expired."""
        if self._prefetch_pool is not None and not held and room >= COLD_START_MIN_BATCH:
            room //= COLD_START_SLICE
        overdue = self.clock.now() - self._parked_tried_at >= self.settings.parked_retry_s
        reserve = max(1, room // PARKED_SHARE) if overdue else 0
        try:
            views = self.claim_queue(lease_id, room - reserve, held) if room > reserve else []
            if overdue or (self._freed and len(views) < room):
                self._freed, self._parked_tried_at = False, self.clock.now()
                # The reserve stands even when the queue's whole segments took more than their share.
                views += self._claim_parked(lease_id, max(reserve, room - len(views)), held, free_rows())
        except StoreUnavailableError:
            self._orphans_possible = True
            raise
        return views

    def claim_queue(self, lease_id: int, room: int, held: Container[str]) -> list[JobView]:
        # Orphans (claims of our lease we do not know we hold) exist only after a claim call
        # of ours was cut short, so only then is every claim key read to find them.
        adopt, self._orphans_possible = self._orphans_possible, False
        # A whole queue segment past the room only when the loop holds nothing: a batch is never
        # empty for want of room, and never grows past it on top of what it holds.
        overshoot = isinstance(held, Sized) and len(held) == 0
        return claim_jobs(self.store, self.keys, self.settings.job_class, lease_id, self.name, room,
                          executor=self._claim_pool, in_flight=self.settings.txns_in_flight,
                          held=self._skipping(held), overshoot=overshoot,
                          adopt=adopt, share=(self.settings.home, self.settings.homes),
                          patience=self._patience)

    def _claim_parked(self, lease_id: int, room: int, held: Container[str], free) -> list[JobView]:
        """Capacity freed since we last looked: claim the parked jobs whose recorded need
        now fits on some machine of the cache. Reads the parked index (not job records),
        a bounded number of pages, and only when something freed, so idle costs nothing."""
        out: list[JobView] = []
        for _ in range(self.settings.parked_pages):
            # A cursor across looks: with more parked jobs than one look reads, every entry
            # still gets its turn (from the head each time, the tail would starve).
            page = self.store.get_page(self.keys.parked_prefix(self.settings.job_class), CLAIM_PAGE,
                                       self._parked_cursor)
            self._parked_cursor = page[-1].key if len(page) == CLAIM_PAGE else ""
            if not self._parked_cursor:
                self.parked_rounds += 1
            if not page:
                break
            wanted = []
            for kv in page:
                entry = IndexEntry.decode(kv)
                if entry.need is not None and not entry.stuck and entry.job_id not in held \
                        and bool((free >= entry.need).all(axis=1).any()):
                    wanted.append(kv)
            out += claim_entries(self.store, self.keys, wanted, lease_id, self.name, room - len(out))
            if len(out) >= room or not self._parked_cursor:
                break
        return out

    def start_prefetch(self, lease_id: int, held: Container[str]) -> None:
        """Claim the next batch in the background, so its round trips overlap this batch's
        decisions and commit. Those jobs are claimed (by our lease) one step early."""
        if self._prefetch_pool is None or self._prefetch is not None:
            return
        fut = self._prefetch_pool.submit(self.claim_queue, lease_id, self.settings.claim_batch, held)
        self._prefetch = (lease_id, fut)

    def collect_prefetch(self, current_lease: int) -> list[JobView]:
        """The prefetched views, if they were claimed under `current_lease`. LeaseNotFoundError
        when that lease expired meanwhile; nothing when the prefetch ran under an older lease
        (that lease is gone, and its claims with it)."""
        if self._prefetch is None:
            return []
        lease_id, fut = self._prefetch
        self._prefetch = None
        try:
            views = fut.result()  # a StoreUnavailableError surfaces here, as from a plain claim
        except StoreUnavailableError:
            self._orphans_possible = True
            raise
        except LeaseNotFoundError:
            if lease_id == current_lease:
                raise
            return []
        return views if lease_id == current_lease else []

    def close(self) -> None:
        for pool in (self._prefetch_pool, self._claim_pool):
            if pool is not None:
                pool.shutdown(wait=True)  # before the lease's revoke, so no claim txn races it
