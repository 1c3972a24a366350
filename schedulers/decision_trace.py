"""One span per batch attempt of a scheduler (docs/architecture.md, "Observability").

    schedule.batch     prepare() to the end of complete(); a span LINK to the traceparent of
                       every job it decides (links, not children: a 4,096-job batch is one span),
                       the job ids in link order in `cellsched.linked_jobs`;
                       an event per conflicted claim (job, task, machine, the Refusal as data)
                       and per parked job (its reason and the counts of what refused it)
      schedule.sync    each sync of the scheduler cache
      schedule.score   the decisions: kernel (policy), array backend, machines scored
      schedule.commit_txn  each commit txn (through CommitEngine.txn_observer: the chunks
                       may run in threads, so their parent is given, never taken from context)

Nothing is traced while the loop idles: the batch span is opened once the claims hold a job,
with the start time of the prepare() that claimed it, and the syncs before that are added as
children with their own times. The score and commit-txn spans are current (OpenTelemetry's
context) while they run, so log lines then carry their ids; the batch span is not, since its
prepare() and complete() need not nest (a simulation interleaves schedulers in one thread).
With tracing off (schedulers/tracing.py) no span is made, so the loop pays one attribute test
per call, plus what the decision ring (schedulers/decision_ring.py) records either way: the
same phases' times, taken with `time.time_ns()`, and their attributes, for the `/ui` dashboard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from itertools import islice

from cellsched.cellstate.commit import CommitEngine, CommitResult
from cellsched.cellstate.model import Claim

from . import tracing
from .attempts import Attempt, HeldJob, Outcome
from .decision_ring import MAX_JOB_IDS, DecisionRing


class DecisionTracer:
    def __init__(self, scheduler, chosen: tracing.Tracing | None = None):
        """`scheduler`: the core.Scheduler traced (its name, settings, engine and cache are read)."""
        self.tracing = chosen or tracing.current()
        self.on = self.tracing.enabled
        settings = scheduler.settings
        self.base = {"cellsched.scheduler": scheduler.name, "cellsched.job_class": settings.job_class.value,
                     "cellsched.conflict_mode": settings.conflict_mode.value}
        self.kernel = settings.policy_name
        self.cache = scheduler.cache
        engine = scheduler.engine
        self._span = None
        self._started_ns = 0
        self._syncs: list[tuple[int, int]] = []  # syncs before the batch span opened
        self.ring = DecisionRing()  # kept with tracing off too (the /ui dashboard's waterfalls)
        if isinstance(engine, CommitEngine):
            engine.txn_observer = self.commit_txn

    # -- the phases (core.Scheduler calls these) ------------------------------------------

    def start(self) -> None:
        """prepare() begins: maybe a batch, maybe an idle poll."""
        self.ring.start()
        if not self.on:
            return
        self._end_dangling()
        self._started_ns = time.time_ns()
        self._syncs.clear()

    @contextmanager
    def sync(self) -> Iterator[None]:
        t0 = time.time_ns()
        try:
            yield
        finally:
            t1 = time.time_ns()
            self.ring.span("schedule.sync", t0, t1, {})
            if self.on and self._span is None:
                self._syncs.append((t0, t1))
            elif self.on:
                self.tracing.start_span("schedule.sync", t0, self._span, attributes=self.base).end(t1)

    def begin(self, held: Mapping[str, HeldJob]) -> None:
        """The claims hold jobs: open the batch span, linked to each job's submission."""
        self.ring.begin(len(held), list(islice(held, MAX_JOB_IDS)))
        if not self.on:
            return
        # The job ids ride in one array attribute, in link order: an attribute on each of 4,096
        # links costs the SDK a bounded, locked dict apiece (about 3x the span's creation).
        links, linked = [], []
        for jid, h in held.items():
            link = tracing.link_to(h.view.record.job.traceparent)
            if link is not None:
                links.append(link)
                linked.append(jid)
        span = self.tracing.start_span("schedule.batch", self._started_ns, links=links, attributes={
            **self.base, "cellsched.jobs": len(held), "cellsched.linked_jobs": linked})
        for t0, t1 in self._syncs:
            self.tracing.start_span("schedule.sync", t0, span, attributes=self.base).end(t1)
        self._syncs.clear()
        self._span = span

    def scoring(self, attempt: Attempt):
        if not self.on or self._span is None:
            return self._ring_scoring(attempt)
        return self._scoring(attempt)

    def _score_attrs(self, attempt: Attempt) -> dict:
        return {"cellsched.jobs_decided": len(attempt.decisions), "cellsched.jobs_crashed": len(attempt.crashed),
                "cellsched.tasks_decided": sum(d.tasks_decided for d in attempt.decisions.values()),
                "cellsched.claims": len(attempt.assumed)}

    def _score_start(self) -> dict:
        columns = self.cache.columns
        return {"cellsched.kernel": self.kernel, "cellsched.backend": columns.xp.__name__,
                "cellsched.machines_scored": len(columns)}

    @contextmanager
    def _ring_scoring(self, attempt: Attempt) -> Iterator[None]:
        t0 = time.time_ns()
        try:
            yield
        finally:
            self.ring.span("schedule.score", t0, time.time_ns(), {**self._score_start(), **self._score_attrs(attempt)})

    @contextmanager
    def _scoring(self, attempt: Attempt) -> Iterator[None]:
        t0 = time.time_ns()
        start = self._score_start()
        span = self.tracing.start_span("schedule.score", t0, parent=self._span, attributes={**self.base, **start})
        token = tracing.attach(span)  # log lines while deciding carry its ids (schedulers/logs.py)
        try:
            yield
        finally:
            tracing.detach(token)
            done = self._score_attrs(attempt)
            span.set_attributes(done)
            t1 = time.time_ns()
            span.end(t1)
            self.ring.span("schedule.score", t0, t1, {**start, **done})

    @contextmanager
    def commit_txn(self, claims: list[Claim]) -> Iterator[Callable[[bool], None]]:
        attrs = {"cellsched.claims": len(claims), "cellsched.jobs": len({c.job_id for c in claims}),
                 "cellsched.machines": len({c.machine_id for c in claims})}
        t0 = time.time_ns()
        parent = self._span if self.on else None
        if parent is None:  # tracing off, or a commit outside a batch (none today): the ring's alone
            try:
                yield lambda succeeded: attrs.__setitem__("cellsched.txn.succeeded", succeeded)
            finally:
                self.ring.span("schedule.commit_txn", t0, time.time_ns(), attrs)
            return
        span = self.tracing.start_span("schedule.commit_txn", t0, parent=parent, attributes={**self.base, **attrs})
        token = tracing.attach(span)  # in the thread that sends the txn

        def seen(succeeded: bool) -> None:
            attrs["cellsched.txn.succeeded"] = succeeded
            span.set_attribute("cellsched.txn.succeeded", succeeded)

        try:
            yield seen
        except BaseException as exc:
            span.record_exception(exc)
            attrs["error"] = type(exc).__name__
            raise
        finally:
            tracing.detach(token)
            t1 = time.time_ns()
            span.end(t1)
            self.ring.span("schedule.commit_txn", t0, t1, attrs)

    def settled(self, attempt: Attempt, result: CommitResult, out: Outcome) -> None:
        """complete() settled the batch: conflicts and parks become events on its span (and in the ring)."""
        span = self._span if self.on else None
        ring = self.ring
        for claim, why in result.conflicted:
            base = {"cellsched.job": claim.job_id, "cellsched.task": claim.task_id,
                    "cellsched.machine": claim.machine_id, "cellsched.reason.kind": why.kind.value}
            ring.event("conflict", {**base, "cellsched.reason": str(why)})
            if span is not None:
                span.add_event("conflict", {**base, "cellsched.reason": tracing.json_attr(why.to_obj())})
        for jid, reason in out.parked.items():
            decision = attempt.decisions.get(jid)
            groups = decision.unplaceable if decision is not None else []
            ring.event("park", {"cellsched.job": jid, "cellsched.reason": reason, "cellsched.counts": groups})
            if span is not None:
                span.add_event("park", {"cellsched.job": jid, "cellsched.reason": reason,
                                        "cellsched.counts": tracing.json_attr(groups)})
        totals = {"cellsched.committed_claims": len(result.committed),
                  "cellsched.conflicted_claims": len(result.conflicted),
                  "cellsched.jobs_placed": len(out.placed), "cellsched.jobs_parked": len(out.parked),
                  "cellsched.jobs_retrying": len(out.retrying), "cellsched.txns": result.stats.txns,
                  "cellsched.lease_lost": out.lease_lost}
        ring.totals(totals)
        if span is not None:
            span.set_attributes(totals)

    def end(self) -> None:
        """complete() is over, however it ended."""
        self.ring.end()
        if self.on:
            self._end_dangling()

    def _end_dangling(self) -> None:
        """End the open batch span (a prepare() that raised after opening it leaves one)."""
        span, self._span = self._span, None
        if span is not None:
            span.end()
