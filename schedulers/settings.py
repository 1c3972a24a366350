"""Per-class scheduler settings: one frozen dataclass, one preset per job class.

Everything a scheduler's behaviour depends on lives here as data, so a simulation sweep
(schedulers x think time x conflict mode x transaction mode, Omega §5) changes settings,
never code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cellsched import gpu
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.model import ConflictMode, JobClass
from cellsched.cellstate.validation import DEFAULT_MAX_TASKS_PER_MACHINE


@dataclass(frozen=True, slots=True)
class ThinkTime:
    """Omega's decision-time model: t_decision = t_job + t_task x tasks decided.

    Zero (the default) means "no model": in real time the decision costs what the CPU
    spends on it. A simulation sets it so that scheduler busyness and conflicts depend
    on the modelled cost rather than on how fast this machine runs NumPy.
    """

    per_job_s: float = 0.0
    per_task_s: float = 0.0

    def __post_init__(self) -> None:
        if self.per_job_s < 0 or self.per_task_s < 0:
            raise InvalidInputError("think times must be non-negative")

    def for_jobs(self, jobs: int, tasks: int) -> float:
        return self.per_job_s * jobs + self.per_task_s * tasks


# Omega §4's batch scheduler: t_job = 0.1 s, t_task = 5 ms.
OMEGA_BATCH_THINK = ThinkTime(0.1, 0.005)


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    job_class: JobClass
    think_time: ThinkTime = field(default_factory=ThinkTime)
    conflict_mode: ConflictMode = ConflictMode.RESOURCE_FIT
    policy_name: str = "spread"  # a key of gpu.PRESETS
    claim_batch: int = 64  # jobs claimed, decided and committed together: fewer, fuller txns
    # Store txns a scheduler keeps in flight at once: claim batches, and commit chunks that share
    # no machine and no job. 1 sends them one by one; more hide the store's round trip (a Raft
    # round on etcd) when a batch needs many txns, e.g. many single-task jobs.
    txns_in_flight: int = 1
    lease_ttl_s: int = 10
    # In real time a background thread keeps the lease while the loop steps; a loop that has
    # not stepped for this long is taken as hung, and its lease left to lapse (schedulers/lease.py).
    lease_stall_s: float = 120.0
    max_retries: int = 5  # conflicted attempts in a row without progress before a job is parked
    parked_retry_s: float = 10.0  # look at parked jobs at least this often, even if nothing freed
    max_tasks_per_machine: int = DEFAULT_MAX_TASKS_PER_MACHINE  # enforced at commit (cellstate.validation)
    parked_pages: int = 8  # parked-index pages read per look (CLAIM_PAGE entries each)
    idle_poll_s: float = 0.5  # how long run() waits when there was nothing to do
    # While its steps find nothing to do, a loop claims every idle_poll_s but follows the watch
    # only this often: each sync of a store in another process is a call, and the events come
    # in bigger, cheaper batches. Its next decision is made after a sync either way.
    idle_sync_s: float = 0.25
    seed: int = 0  # mixed into every (job id, attempt) seed; 0 = the plain (job id, attempt) seed
    array_backend: str | None = None  # "numpy" | "cupy" | "auto"; None = CELLSCHED_ARRAY_BACKEND
    # This scheduler's home among `homes` disjoint shares of the cell (gpu/home.py): N schedulers
    # of one class given homes (i, N) pick disjoint machines while their homes have room, so
    # their commits do not collide; the whole cell is each one's fallback. 1 = the whole cell.
    # The same (i, N) is its share of the queue (cellstate.claims.claim_jobs), so their claims
    # do not collide either.
    home: int = 0
    homes: int = 1
    # Decide the one-task jobs of one shape in a batch together, in one vectorised pass
    # (gpu/alike.py); False decides every job on its own.
    batch_alike: bool = True
    # A real-time loop publishes its metrics under its lease at most this often
    # (schedulers/metrics_publish.py); 0 never publishes.
    metrics_publish_s: float = 5.0

    def __post_init__(self) -> None:
        if self.policy_name not in gpu.PRESETS:
            raise InvalidInputError(f"policy_name {self.policy_name!r}: expected one of {sorted(gpu.PRESETS)}")
        if self.claim_batch < 1:
            raise InvalidInputError("claim_batch must be at least 1")
        if self.txns_in_flight < 1:
            raise InvalidInputError("txns_in_flight must be at least 1")
        if self.lease_ttl_s < 1:
            raise InvalidInputError("lease_ttl_s must be at least 1 second (etcd's lease granularity)")
        if self.lease_stall_s < self.lease_ttl_s:
            raise InvalidInputError("lease_stall_s must be at least lease_ttl_s")
        if self.max_retries < 0:
            raise InvalidInputError("max_retries must be non-negative")
        if self.parked_retry_s <= 0 or self.idle_poll_s <= 0 or self.idle_sync_s < 0:
            raise InvalidInputError("parked_retry_s and idle_poll_s must be positive, idle_sync_s non-negative")
        if self.metrics_publish_s < 0:
            raise InvalidInputError(f"metrics_publish_s {self.metrics_publish_s}: must be non-negative (0: never)")
        if self.homes < 1 or not 0 <= self.home < self.homes:
            raise InvalidInputError(f"home {self.home} of homes {self.homes}: need homes >= 1 and 0 <= home < homes")

    @property
    def policy(self) -> gpu.Policy:
        preset = gpu.PRESETS[self.policy_name]
        return preset if self.homes == 1 else preset.at_home(self.home, self.homes)

    def with_(self, **changes) -> SchedulerSettings:
        return replace(self, **changes)


# Batch: many small jobs, throughput first; Omega's cheap randomised first fit.
BATCH = SchedulerSettings(JobClass.BATCH, policy_name="random_first_fit", claim_batch=128)
# Service: long-running, placement quality first; spread load (Kubernetes' default).
SERVICE = SchedulerSettings(JobClass.SERVICE, policy_name="spread", claim_batch=16)
# GPU: distributed training is usually a gang; keep whole multi-GPU machines free.
# (A gang's all-or-nothing commit is the job's own mode, not a setting.)
GPU = SchedulerSettings(JobClass.GPU, policy_name="gpu_pack", claim_batch=16)

PRESETS: dict[JobClass, SchedulerSettings] = {s.job_class: s for s in (BATCH, SERVICE, GPU)}
