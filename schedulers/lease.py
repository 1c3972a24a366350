"""The scheduler's lease: what every claim it holds is bound to (docs/architecture.md,
"Claims, parking and crash safety").

Refreshed inline at step boundaries, which is all a simulation needs. In real time a step
can outlast the lease: a big batch on a saturated store, a 20,000-task job. Its claims
would then lapse mid-step, the commit would fail its fence, and each lapse counts once
more towards the claimed jobs' crash limit, so a merely slow scheduler could get healthy
jobs parked for good. `start()` adds a background refresher for real-time loops.

The refresher is not a blind keepalive: it renews only while the loop ticks (`tick()` at
each step), so a loop that hangs on a job lets its lease lapse after `stall_s` and the
job goes to another scheduler, counted as a crash. That is the crash limit's premise.
"""

from __future__ import annotations

import threading

from cellsched.cellstate.clock import Clock
from cellsched.cellstate.errors import LeaseNotFoundError, StoreUnavailableError
from cellsched.cellstate.store import CellStore


class LeaseKeeper:
    def __init__(self, store: CellStore, ttl_s: int, clock: Clock, stall_s: float):
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self.stall_s = stall_s
        self.lease_id = 0  # 0: none held
        self._refreshed_at = 0.0
        self._expired = 0  # a lease id the refresher found gone
        self._ticked_at = clock.now()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.background_refreshes = 0

    def tick(self) -> None:
        """The loop is alive and stepping."""
        self._ticked_at = self.clock.now()

    def ensure(self) -> int:
        """The held lease's id, granting one when none is held."""
        if not self.lease_id:
            lease_id = self.store.grant_lease(self.ttl_s)
            with self._lock:
                self.lease_id, self._refreshed_at = lease_id, self.clock.now()
        return self.lease_id

    def due(self) -> bool:
        """A check is due: the last refresh may be old enough for the lease to lapse soon,
        or the refresher found it gone."""
        return self._expired == self.lease_id or self.clock.now() - self._refreshed_at >= self.ttl_s / 3

    def alive(self, lease_id: int, only_if_due: bool = False) -> bool:
        """Whether `lease_id` is the held lease and still alive, refreshing it (a round trip)
        unless only_if_due and the last refresh is recent enough that it cannot have expired."""
        if not lease_id or lease_id != self.lease_id or self._expired == lease_id:
            return False
        if only_if_due and not self.due():
            return True
        try:
            self.store.refresh_lease(lease_id)
        except LeaseNotFoundError:
            return False
        with self._lock:
            if self.lease_id == lease_id:
                self._refreshed_at = self.clock.now()
        return True

    def drop(self) -> None:
        """The held lease expired (and its claims with it): the next ensure() grants anew."""
        with self._lock:
            self.lease_id = 0

    # -- the background refresher (real time only) ---------------------------------------

    def start(self, name: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._refresh_loop, name=f"{name}-lease", daemon=True)
            self._thread.start()

    def _refresh_loop(self) -> None:
        period = self.ttl_s / 6  # twice per inline due period, so one slow round trip is no lapse
        while not self._stop.wait(period):
            lease_id = self.lease_id
            if not lease_id or self._expired == lease_id or not self.due():
                continue
            if self.clock.now() - self._ticked_at > self.stall_s:
                continue  # the loop hangs: let the lease lapse, so its jobs go to others
            try:
                self.store.refresh_lease(lease_id)
            except LeaseNotFoundError:
                self._expired = lease_id  # the loop forgets what it fenced at its next check
                continue
            except StoreUnavailableError:
                continue  # the loop sees the outage itself; retry at the next period
            with self._lock:
                if self.lease_id == lease_id:
                    self._refreshed_at = self.clock.now()
                    self.background_refreshes += 1

    def close(self) -> None:
        """Stop refreshing and revoke the lease, which releases every claim bound to it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
            self._thread = None
        lease_id, self.lease_id = self.lease_id, 0
        if lease_id:
            try:
                self.store.revoke_lease(lease_id)
            except LeaseNotFoundError:
                pass
