"""The scheduler loop (docs/architecture.md, "The path of one job"), plain Python: no Ray, time from a Clock.

One iteration, split in two so a discrete-event simulation can put the think time
between them (Omega §4: a decision reads the cell at t and commits at t + think):

    prepare():  keep the lease -> sync the cache -> claim jobs -> decide each on the
                cache's columns and assume its claims there
    complete(): commit every claim of the batch -> confirm the fresh views in the cache
                and forget what did not commit -> per job: placed, retry (conflict), or
                park with the reason

``step()`` runs both back to back (sleeping the modelled think time on the clock, if
any); ``run()`` steps until a stop event or deadline.

What happens to a claimed job after an attempt:
    fully placed                  -> done (the commit engine drops the claim and queue entry)
    some task had no machine      -> parked with the reason; retried when capacity frees
                                     or every parked_retry_s
    conflicted                    -> kept and retried next step on fresh state; after
                                     max_retries attempts in a row that placed nothing,
                                     parked with the last conflict as its reason
    lease lost                    -> forgotten: the claim is gone and another scheduler
                                     may hold the job now
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from cellsched.cellstate.claims import (
    CLAIM_PAGE,
    IndexEntry,
    claim_entries,
    claim_jobs,
    park_job,
    release_claim,
)
from cellsched.cellstate.clock import Clock
from cellsched.cellstate.codec import is_sharded
from cellsched.cellstate.commit import CommitEngine, CommitResult, Plan, max_gang_machines
from cellsched.cellstate.errors import LeaseNotFoundError, StoreUnavailableError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import Claim, JobRecord, JobStatus, TransactionMode
from cellsched.cellstate.planner import Planner
from cellsched.cellstate.resources import Vector
from cellsched.cellstate.store import CellStore
from cellsched.cellstate.validation import Refusal
from cellsched.cellstate.views import JobView, read_job_view

from .cache import SchedulerCache
from .decide import DecideFn, Decision, decide_job, decision_seed
from .metrics import SchedulerMetrics
from .settings import SchedulerSettings


@dataclass
class HeldJob:
    """A job this scheduler holds a claim on, across attempts."""

    view: JobView
    claim_revision: int = 0  # our claim key's mod_revision: the fence every commit and release compares
    attempts: int = 0  # by this scheduler, including earlier claims of the job
    no_progress: int = 0  # conflicted attempts in a row that placed nothing
    last_conflict: str = ""


@dataclass
class Attempt:
    """What prepare() decided; complete() commits it."""

    started_at: float
    think_s: float
    lease_id: int
    decisions: dict[str, Decision] = field(default_factory=dict)  # job id -> decision
    assumed: list[Claim] = field(default_factory=list)  # claims this attempt assumed in the cache
    crashed: dict[str, str] = field(default_factory=dict)  # job id -> the error that stopped its decision

    @property
    def claims(self) -> list[Claim]:
        return [c for d in self.decisions.values() for c in d.claims]


@dataclass
class Outcome:
    """What complete() did, for drivers and tests."""

    committed: list[Claim] = field(default_factory=list)
    placed: list[str] = field(default_factory=list)  # job ids fully placed by this commit
    parked: dict[str, str] = field(default_factory=dict)  # job id -> reason
    retrying: list[str] = field(default_factory=list)
    lease_lost: bool = False


def smallest_need(rec: JobRecord) -> Vector:
    """The least a machine must have free for the job to place one more task: the
    elementwise minimum of its unplaced groups' requests (a lower bound, so a retry is
    never skipped when it could succeed)."""
    placed = set(rec.bound) | rec.done
    need: list[int] | None = None
    for gi, g in enumerate(rec.job.groups):
        if all(f"{rec.job.id}/{gi}/{i}" in placed for i in range(g.count)):
            continue
        need = list(g.request) if need is None else [min(a, b) for a, b in zip(need, g.request, strict=True)]
    return tuple(need) if need is not None else tuple(0 for _ in rec.job.groups[0].request)


MAX_LOOP_ERRORS_IN_A_ROW = 5


class Scheduler:
    def __init__(self, name: str, store: CellStore, keys: CellKeys, settings: SchedulerSettings, clock: Clock,
                 decide_fn: DecideFn | None = None, planner: Planner | None = None):
        self.name = name
        self.store = store
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self.decide_fn: DecideFn = decide_fn or decide_job
        self.policy = settings.policy
        # What the plans are committed through (cellstate.planner); by default the engine the
        # settings describe. Given one, the scheduler owns it: close() closes it.
        self.engine: Planner = planner if planner is not None else CommitEngine(
            store, keys, settings.conflict_mode, clock, settings.txns_in_flight, settings.max_tasks_per_machine)
        # With txns in flight, claim txns go out concurrently too, and the next batch is claimed
        # in the background while this one is decided and committed (_start_prefetch).
        pipelined = settings.txns_in_flight > 1
        self._claim_pool = ThreadPoolExecutor(settings.txns_in_flight, f"{name}-claim") if pipelined else None
        self._prefetch_pool = ThreadPoolExecutor(1, f"{name}-prefetch") if pipelined else None
        self._prefetch: tuple[int, Future] | None = None  # (lease id, claim_jobs future)
        self.cache = SchedulerCache(store, keys, settings.max_tasks_per_machine, settings.array_backend)
        self.held: dict[str, HeldJob] = {}  # insertion order = claim order = priority order
        self._metrics = SchedulerMetrics(started_at=clock.now())
        self._lease_id = 0
        self._lease_refreshed_at = 0.0
        self._freed = False  # capacity freed since parked jobs were last retried
        self._orphans_possible = False
        self._parked_cursor = ""  # where the next look at the parked index starts  # a claim call was cut short: look for claims we hold unknowingly
        self._parked_tried_at = clock.now()
        # Attempts per job survive parking and re-claiming, so a retry never reuses a seed.
        self._attempts: dict[str, int] = {}

    # -- the loop ---------------------------------------------------------------

    def step(self) -> bool:
        """One iteration: claim a batch, decide, commit. Returns whether it did work."""
        attempt = self.prepare()
        if attempt is None:
            return False
        if attempt.think_s > 0:
            self.clock.sleep(attempt.think_s)
        self.complete(attempt)
        return True

    def run(self, stop: threading.Event | float) -> None:
        """Step until `stop` is set (an Event) or the clock reaches it (a deadline)."""
        def done() -> bool:
            return stop.is_set() if isinstance(stop, threading.Event) else self.clock.now() >= stop

        failed_in_a_row = 0
        while not done():
            try:
                worked = self.step()
                failed_in_a_row = 0
            except StoreUnavailableError:
                # Held jobs stay held: their next commit is validated against the job
                # records it compares, so a chunk that landed before the outage is seen.
                self._metrics.store_errors += 1
                self._refresh_held()
                worked = False
            except LeaseNotFoundError:  # expired between our checks: forget what it fenced
                self._lose_lease(Outcome())
                worked = False
            except Exception:
                # Not one job's fault (those are parked in step): the loop's own state may be
                # bad. Retry a few times; then let it die, so its process restarts fresh.
                self._metrics.loop_errors += 1
                failed_in_a_row += 1
                if failed_in_a_row >= MAX_LOOP_ERRORS_IN_A_ROW:
                    raise
                worked = False
            if not worked:
                self.clock.sleep(self.settings.idle_poll_s)

    def _refresh_held(self) -> None:
        """After an outage, re-read the held jobs: a commit cut short may have landed in part."""
        for jid, held in list(self.held.items()):
            try:
                fresh = read_job_view(self.store, self.keys, jid)
            except StoreUnavailableError:
                return  # still down; the engine's validation catches stale views anyway
            if fresh is None:
                del self.held[jid]
            else:
                held.view = fresh

    def prepare(self) -> Attempt | None:
        """Keep the lease, sync, claim and decide. None when there is nothing to do."""
        started = self.clock.now()
        lease_id = self._keep_lease()
        self._sync()
        self._claim(lease_id)
        self._sync()  # the claims read job records at a newer revision: catch the cache up
        if not self.held:
            return None
        self._start_prefetch(lease_id)
        attempt = Attempt(started, 0.0, lease_id)
        tasks = 0
        for jid, held in self.held.items():
            held.attempts = self._attempts.get(jid, 0) + 1
            self._attempts[jid] = held.attempts
            rec = held.view.record
            if held.attempts == 1:
                self._metrics.wait_first_attempt_s.append(started - rec.submitted_at)
            seed = decision_seed(self.settings.seed, jid, held.attempts)
            try:
                decision = self.decide_fn(self.cache.columns, self.cache.index, rec, self.policy, seed)
            except Exception as exc:  # one job's bug must not stop the loop: park it with the error
                # Decide functions only read the cache, so a crash leaves nothing assumed.
                attempt.crashed[jid] = f"scheduler error while deciding: {exc!r}"
                continue
            decision = self._fit_gang_in_one_txn(rec, decision)
            attempt.decisions[jid] = decision
            # Assumed, so the next job of the batch sees these placements.
            self.cache.assume(decision.claims)
            attempt.assumed += decision.claims
            tasks += decision.tasks_decided
        attempt.think_s = self.settings.think_time.for_jobs(len(attempt.decisions), tasks)
        return attempt

    def complete(self, attempt: Attempt) -> Outcome:
        """Commit the attempt's claims and settle every job it decided."""
        try:
            return self._complete(attempt)
        finally:
            # However complete ends, what the commit's views did not confirm (conflicts,
            # jobs parked or whose commit raised, a lost lease, an outage) is forgotten.
            self.cache.forget(attempt.assumed)

    def _complete(self, attempt: Attempt) -> Outcome:
        out = Outcome()
        if not self._lease_alive(attempt.lease_id, only_if_due=True):
            self._lose_lease(out)
            self._metrics.busy_s += self.clock.now() - attempt.started_at
            return out
        decided_at = self.clock.now()
        claims = attempt.claims
        result = CommitResult()
        for jid, why in attempt.crashed.items():
            self._park(jid, self.held[jid], why, out, need=None)
        if claims:
            try:
                result = self._commit_isolated(attempt, out)
            except StoreUnavailableError:
                self._metrics.busy_s += self.clock.now() - attempt.started_at
                raise
        # The commit's fresh views confirm what landed; complete() forgets the rest.
        self.cache.confirm(result.machines)
        out.committed = result.committed
        self._settle_jobs(attempt, result, out)
        m = self._metrics
        m.record_commit(result.stats, len(result.committed), len(result.conflicted))
        m.record_decision(decided_at - attempt.started_at, len(result.committed), len(result.conflicted))
        m.iterations += 1
        m.busy_s += self.clock.now() - attempt.started_at
        return out

    def _plan(self, decisions: dict[str, Decision]) -> Plan:
        claims = [c for d in decisions.values() for c in d.claims]
        jobs = {jid: self.held[jid].view for jid, d in decisions.items() if d.claims}
        fences = {jid: self.held[jid].claim_revision for jid in jobs}
        return Plan(claims, self.cache.views(sorted({c.machine_id for c in claims})), jobs, fences)

    def _commit_isolated(self, attempt: Attempt, out: Outcome) -> CommitResult:
        """Commit the batch; should the commit raise on something other than the store
        being unreachable, commit job by job, and park each job that raises on its own
        with the error as its reason, so one bad job never stalls its class."""
        try:
            return self.engine.commit(self._plan(attempt.decisions))
        except StoreUnavailableError:
            raise
        except Exception:
            pass
        total = CommitResult()
        for jid, decision in list(attempt.decisions.items()):
            if not decision.claims:
                continue
            try:
                part = self.engine.commit(self._plan({jid: decision}))
            except StoreUnavailableError:
                raise
            except Exception as exc:
                attempt.decisions[jid] = Decision([], len(decision.claims), "", decision.tasks_decided)
                attempt.crashed[jid] = f"scheduler error while committing: {exc!r}"
                self._park(jid, self.held[jid], attempt.crashed[jid], out, need=None)
                continue
            total.committed += part.committed
            total.conflicted += part.conflicted
            total.machines.update(part.machines)
            total.jobs.update(part.jobs)
            total.stats.add(part.stats)
            total.revision = max(total.revision, part.revision)
        return total

    # -- per job ----------------------------------------------------------------

    def _settle_jobs(self, attempt: Attempt, result: CommitResult, out: Outcome) -> None:
        committed: dict[str, int] = {}
        for c in result.committed:
            committed[c.job_id] = committed.get(c.job_id, 0) + 1
        conflicts: dict[str, str] = {}
        for c, why in result.conflicted:
            conflicts.setdefault(c.job_id, why)  # the first refusal, as data
        for jid, decision in attempt.decisions.items():
            if jid in attempt.crashed:
                continue  # parked already
            held = self.held[jid]
            if jid in result.jobs:
                held.view = result.jobs[jid]
            rec = held.view.record
            if rec.status is JobStatus.PLACED:
                if committed.get(jid):  # placed by this commit, not by someone who took it over
                    self._metrics.record_placed(rec.submitted_at, rec.placed_at or self.clock.now(), held.attempts)
                    out.placed.append(jid)
                del self.held[jid]
                self._attempts.pop(jid, None)
            elif rec.status not in (JobStatus.PENDING, JobStatus.PARKED):
                release_claim(self.store, self.keys, jid, held.claim_revision)  # cancelled or finished meanwhile
                del self.held[jid]
                self._attempts.pop(jid, None)
            elif jid in conflicts:
                self._after_conflict(jid, held, committed.get(jid, 0) > 0, conflicts[jid], out)
            elif decision.unplaced:
                self._park(jid, held, decision.reason, out, need=smallest_need(rec), refusal=decision.refusal())
            elif decision.tasks_decided == 0:  # nothing left to place that we can see
                release_claim(self.store, self.keys, jid, held.claim_revision)
                del self.held[jid]
            else:  # everything it claimed committed, yet unbound tasks remain: decide again
                out.retrying.append(jid)

    def _after_conflict(self, jid: str, held: HeldJob, progressed: bool, why: Refusal, out: Outcome) -> None:
        held.last_conflict = str(why)
        held.no_progress = 0 if progressed else held.no_progress + 1
        if held.no_progress > self.settings.max_retries:
            self._metrics.jobs_parked_no_progress += 1
            self._park(jid, held, f"no progress after {held.no_progress} conflicted attempts; last: {why}", out,
                       need=smallest_need(held.view.record),
                       refusal={"kind": "no_progress", "attempts": held.no_progress, "last": why.to_obj()})
        else:
            out.retrying.append(jid)

    def _park(self, jid: str, held: HeldJob, reason: str, out: Outcome, need: Vector | None,
              refusal: dict | None = None) -> None:
        view = JobView(held.view.record, held.view.revision, held.claim_revision)
        parked = park_job(self.store, self.keys, view, reason, need,
                          refusal if refusal is not None else {"kind": "error", "detail": reason})
        if parked is None:  # the record changed under us: re-read and decide again next step
            fresh = read_job_view(self.store, self.keys, jid)
            if fresh is None:
                del self.held[jid]
            else:
                held.view = fresh
                out.retrying.append(jid)
            return
        del self.held[jid]  # park_job dropped our claim; the job stays queued
        self._metrics.jobs_parked += 1
        out.parked[jid] = reason

    def _fit_gang_in_one_txn(self, rec, decision: Decision) -> Decision:
        """A gang commits in one txn (no reservation protocol yet): refuse a bigger one here,
        with a reason, instead of letting the engine refuse the whole batch."""
        if rec.job.mode is not TransactionMode.ALL_OR_NOTHING or not decision.claims:
            return decision
        spans = len({c.machine_id for c in decision.claims})
        limit = self.store.limits.max_txn_ops
        widest = max_gang_machines(limit, is_sharded(rec.job))
        if spans <= widest:
            return decision
        return Decision([], len(decision.claims),
                        f"gang spans {spans} machines; one txn holds at most {widest} "
                        f"with max_txn_ops={limit}", decision.tasks_decided)

    # -- claims, sync, lease --------------------------------------------------------

    def _claim(self, lease_id: int) -> None:
        self._collect_prefetch()
        room = self.settings.claim_batch - len(self.held)
        if room <= 0 or lease_id != self._lease_id:
            return
        try:
            views = self._claim_jobs(lease_id, room)
            if len(views) < room and self._parked_due():
                views += self._claim_parked(lease_id, room - len(views))
        except LeaseNotFoundError:  # expired since _keep_lease: the next step starts a new one
            self._lose_lease(Outcome())
            return
        except StoreUnavailableError:
            self._orphans_possible = True
            raise
        self._hold(views)

    def _parked_due(self) -> bool:
        """Look at the parked index when capacity freed, or every parked_retry_s."""
        now = self.clock.now()
        if self._freed or now - self._parked_tried_at >= self.settings.parked_retry_s:
            self._freed, self._parked_tried_at = False, now
            return True
        return False

    def _hold(self, views: list[JobView]) -> None:
        for view in views:
            self.held.setdefault(view.record.job.id, HeldJob(view, view.claim_revision))

    def _claim_jobs(self, lease_id: int, room: int) -> list[JobView]:
        # Orphans (claims of our lease we do not know we hold) exist only after a claim call
        # of ours was cut short, so only then is every claim key read to find them.
        adopt, self._orphans_possible = self._orphans_possible, False
        return claim_jobs(self.store, self.keys, self.settings.job_class, lease_id, self.name, room,
                          executor=self._claim_pool, in_flight=self.settings.txns_in_flight, held=self.held,
                          adopt=adopt)

    def _claim_parked(self, lease_id: int, room: int) -> list[JobView]:
        """Capacity freed since we last looked: claim the parked jobs whose recorded need
        now fits on some machine of the cache. Reads the parked index (not job records),
        a bounded number of pages, and only when something freed, so idle costs nothing."""
        free = self.cache.free_rows()
        out: list[JobView] = []
        for _ in range(self.settings.parked_pages):
            # A cursor across looks: with more parked jobs than one look reads, every entry
            # still gets its turn (from the head each time, the tail would starve).
            page = self.store.get_page(self.keys.parked_prefix(self.settings.job_class), CLAIM_PAGE,
                                       self._parked_cursor)
            self._parked_cursor = page[-1].key if len(page) == CLAIM_PAGE else ""
            if not page:
                break
            wanted = []
            for kv in page:
                entry = IndexEntry.decode(kv)
                if entry.need is not None and not entry.stuck and entry.job_id not in self.held \
                        and bool((free >= entry.need).all(axis=1).any()):
                    wanted.append(kv)
            out += claim_entries(self.store, self.keys, wanted, lease_id, self.name, room - len(out))
            if len(out) >= room or not self._parked_cursor:
                break
        return out

    def _start_prefetch(self, lease_id: int) -> None:
        """Claim the next batch in the background, so its round trips overlap this batch's
        decisions and commit. Those jobs are claimed (by our lease) one step early."""
        if self._prefetch_pool is None or self._prefetch is not None:
            return
        fut = self._prefetch_pool.submit(self._claim_jobs, lease_id, self.settings.claim_batch)
        self._prefetch = (lease_id, fut)

    def _collect_prefetch(self) -> None:
        if self._prefetch is None:
            return
        lease_id, fut = self._prefetch
        self._prefetch = None
        try:
            views = fut.result()  # a StoreUnavailableError surfaces here, as from a plain claim
        except StoreUnavailableError:
            self._orphans_possible = True
            raise
        except LeaseNotFoundError:
            if lease_id == self._lease_id:
                self._lose_lease(Outcome())
            return
        if lease_id != self._lease_id:  # that lease is gone, and its claims with it
            return
        self._hold(views)

    def _sync(self) -> None:
        if self.cache.sync():
            self._freed = True

    def _keep_lease(self) -> int:
        now = self.clock.now()
        if self._lease_id and now - self._lease_refreshed_at >= self.settings.lease_ttl_s / 3:
            if not self._lease_alive(self._lease_id):
                self._lose_lease(Outcome())
        if not self._lease_id:
            self._lease_id = self.store.grant_lease(self.settings.lease_ttl_s)
            self._lease_refreshed_at = now
        return self._lease_id

    def _lease_alive(self, lease_id: int, only_if_due: bool = False) -> bool:
        """Refresh the lease; False when it expired. only_if_due skips the round trip while
        the last refresh is recent enough that the lease cannot have expired since."""
        if lease_id != self._lease_id:
            return False
        if only_if_due and self.clock.now() - self._lease_refreshed_at < self.settings.lease_ttl_s / 3:
            return True
        try:
            self.store.refresh_lease(lease_id)
        except LeaseNotFoundError:
            return False
        self._lease_refreshed_at = self.clock.now()
        return True

    def _lose_lease(self, out: Outcome) -> None:
        """The lease expired: every claim bound to it is gone, so forget those jobs."""
        self._metrics.lease_losses += 1
        self._metrics.jobs_lost_to_lease += len(self.held)
        self.held.clear()
        self._lease_id = 0
        out.lease_lost = True

    # -- reading ----------------------------------------------------------------------

    def metrics(self) -> dict:
        return {"scheduler": self.name, "job_class": self.settings.job_class.value,
                **self._metrics.snapshot(self.clock.now())}

    @property
    def raw_metrics(self) -> SchedulerMetrics:
        return self._metrics

    def close(self) -> None:
        for pool in (self._prefetch_pool, self._claim_pool):
            if pool is not None:
                pool.shutdown(wait=True)  # before the revoke, so no claim txn races it
        if self._lease_id:
            try:
                self.store.revoke_lease(self._lease_id)
            except LeaseNotFoundError:
                pass
            self._lease_id = 0
        self.engine.close()
        self.cache.close()
