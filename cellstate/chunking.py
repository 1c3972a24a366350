"""Cutting a commit's claims into txns that fit the store's limits (docs/architecture.md,
"The commit protocol", 4. Chunks): by ops (`txn_ops_cost`) and by estimated bytes; a gang
never straddles two txns (`max_gang_machines`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from .codec import is_sharded
from .model import Claim, TransactionMode
from .store import StoreLimits
from .views import JobView, MachineView

# A chunk's estimated request stays under this fraction of the store's request limit:
# the estimate is close, not exact, and the views it is made from may grow meanwhile.
REQUEST_BYTES_BUDGET = 0.7


def txn_ops_cost(n_machines: int, n_jobs: int, n_sharded: int = 0, n_claims: int | None = None,
                 n_entries: int | None = None) -> int:
    """Ops one commit txn needs, the larger of its parts:
    compares: 1 per machine (its allocation record, which every spec write moves too:
    cellstate/machines.py) + 1 per job (record) + 1 per claim key (shared by the jobs of one
    claim txn: cellstate/claims.py; `n_claims`, at most one per job, unknown: one per job);
    failure reads: the same keys, + 1 per sharded job (its shards);
    success: 1 put per machine + per job its record and, for `n_entries` of them (unknown: all),
    its queue entry's delete when it completes, else a put of its entry (claim count reset;
    a job placed from a queue segment writes none: cellstate/queue_segments.py); + 1 new shard
    per sharded job."""
    claims = n_jobs if n_claims is None else n_claims
    entries = n_jobs if n_entries is None else n_entries
    return max(n_machines + n_jobs + claims + n_sharded, n_machines + n_jobs + entries + n_sharded)


def max_gang_machines(max_txn_ops: int, sharded: bool = False) -> int:
    """The widest all-or-nothing job one txn can commit: it must span at most this many machines."""
    return max(0, (max_txn_ops - 2 - sharded) // 2)


class _TxnSizer:
    """Estimated bytes a txn writes for each machine, job and claim of a plan (keys,
    values, framing), cheap enough for every commit: counts, not encodings."""

    def __init__(self, machines: Mapping[str, MachineView], jobs: Mapping[str, JobView]):
        self.machines, self.jobs = machines, jobs
        self._sizes: dict[str, int] = {}

    def machine(self, mid: str) -> int:
        size = self._sizes.get(mid)
        if size is None:
            alloc = self.machines[mid].alloc
            sample = len(next(iter(alloc.tasks))) if alloc.tasks else 0
            size = self._sizes[mid] = 3 * len(mid) + 160 + len(alloc.tasks) * (sample + 30)
        return size

    def job(self, jid: str) -> int:
        job = self.jobs[jid].record.job
        inline = 0 if is_sharded(job) else job.task_count * (2 * len(job.id) + 150)
        return 5 * len(jid) + 600 + 250 * len(job.groups) + inline

    @staticmethod
    def claim(c: Claim) -> int:  # its allocation entry, and its shard entry
        return 2 * len(c.task_id) + len(c.machine_id) + 50


def chunk_claims(claims: list[Claim], machines: Mapping[str, MachineView], jobs: Mapping[str, JobView],
                 limits: StoreLimits, claim_of: Mapping[str, str] | None = None) -> list[list[Claim]]:
    """Group claims into chunks that fit one txn by ops AND by bytes.

    A gang job's claims never straddle two chunks. An incremental job's claims go in
    machine order, so each machine's allocation record is rewritten once per commit,
    not once per chunk (a record of hundreds of tasks rewritten per chunk is what made
    a large job write 100x its final size). Jobs of one claim go after the others, in
    machine order, so the one-task jobs a batch put on one machine share a txn and that
    machine's allocation record is written once for them (random placement of a batch of
    4,096 pods on 5,000 machines puts ~1.5 on each machine it touches). `claim_of` (job id ->
    the id of the claim holding it) counts the claim keys a txn compares; without it, one
    per job."""
    limit = limits.max_txn_ops
    budget = int(limits.max_request_bytes * REQUEST_BYTES_BUDGET)
    sizer = _TxnSizer(machines, jobs)
    by_job: dict[str, list[Claim]] = defaultdict(list)
    for c in claims:
        by_job[c.job_id].append(c)
    singles = sorted((jc for jc in by_job.values() if len(jc) == 1), key=lambda jc: jc[0].machine_id)
    ordered = [jc for jc in by_job.values() if len(jc) > 1] + singles
    chunks: list[list[Claim]] = []
    cur: list[Claim] = []
    cur_m: set[str] = set()
    cur_j: set[str] = set()
    cur_k: set[str] = set()  # claim keys compared
    cur_bytes = cur_s = cur_e = 0

    def flush():
        nonlocal cur, cur_m, cur_j, cur_k, cur_bytes, cur_s, cur_e
        if cur:
            chunks.append(cur)
        cur, cur_m, cur_j, cur_k, cur_bytes, cur_s, cur_e = [], set(), set(), set(), 0, 0, 0

    def entry_ops(jid: str) -> int:
        """1 unless the job is placed from a queue segment by its one claim here (no queue write)."""
        rec = jobs[jid].record
        return 0 if rec.segment and len(by_job[jid]) == 1 and len(rec.unbound_tasks()) == 1 else 1

    def claims_with(jid: str) -> int:
        if claim_of is None:
            return len(cur_j) + (jid not in cur_j)
        return len(cur_k) + (jid in claim_of and claim_of[jid] not in cur_k)

    def add_job(jid: str, sh: int) -> None:
        nonlocal cur_s, cur_e
        cur_j.add(jid)
        cur_s += sh
        cur_e += entry_ops(jid)
        if claim_of is not None and jid in claim_of:
            cur_k.add(claim_of[jid])

    for job_claims in ordered:
        jid = job_claims[0].job_id
        job = jobs[jid].record.job
        sh = int(is_sharded(job))
        if job.mode is TransactionMode.ALL_OR_NOTHING:
            ms = {c.machine_id for c in job_claims}
            extra = sizer.job(jid) + sum(sizer.machine(m) for m in ms - cur_m) + sum(map(sizer.claim, job_claims))
            if txn_ops_cost(len(cur_m | ms), len(cur_j) + 1, cur_s + sh, claims_with(jid), cur_e + 1) > limit \
                    or cur_bytes + extra > budget:
                flush()
            cur += job_claims
            cur_m |= ms
            cur_bytes += extra
            add_job(jid, sh)
            continue
        for c in sorted(job_claims, key=lambda c: c.machine_id):
            new_m = c.machine_id not in cur_m
            new_j = jid not in cur_j
            extra = sizer.claim(c) + (sizer.machine(c.machine_id) if new_m else 0) + (sizer.job(jid) if new_j else 0)
            cost = txn_ops_cost(len(cur_m) + new_m, len(cur_j) + new_j, cur_s + sh * new_j, claims_with(jid),
                                cur_e + (entry_ops(jid) if new_j else 0))
            if cur and (cost > limit or cur_bytes + extra > budget):
                flush()
                new_m = new_j = True
                extra = sizer.claim(c) + sizer.machine(c.machine_id) + sizer.job(jid)
            cur.append(c)
            cur_m.add(c.machine_id)
            cur_bytes += extra
            if new_j:
                add_job(jid, sh)
    flush()
    return chunks
