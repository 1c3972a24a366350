"""cellsched.cellstate: the cell's shared state and the rules every scheduler obeys.

The names below are the layer's public surface; everything else is reached through its
module (docs/architecture.md, "Where each concept lives", says which module holds what). The store contract and its backends are the subpackage ``cellstate.store``.
"""

from .cancel import CancelResult, cancel_job
from .claims import claim_jobs, park_job, release_claim
from .clock import Clock, RealClock, SimClock
from .commit import CommitEngine, CommitResult, Plan, max_gang_machines
from .errors import CellError, InvalidInputError
from .housekeeping import Housekeeper
from .invariants import CheckReport, check_store
from .job_states import JobEvent, TaskState, apply_event, task_state
from .keys import CellKeys
from .lifecycle import release_tasks
from .machines import add_machines, set_machine_state
from .model import (
    Claim,
    ConflictMode,
    Job,
    JobClass,
    JobRecord,
    JobStatus,
    Machine,
    MachineState,
    TaskGroup,
    TaskOutcome,
    TransactionMode,
    group_of_task,
    job_of_task,
    parse_task_id,
    task_id,
)
from .planner import Planner
from .retention import purge_finished
from .store import CellStore, MemoryStore, StoreLimits
from .submission import SubmitResult, submit_jobs
from .validation import Refusal, RefusalKind, validate_claims

__all__ = [
    "CancelResult",
    "CellError",
    "CellKeys",
    "CellStore",
    "CheckReport",
    "Claim",
    "Clock",
    "CommitEngine",
    "CommitResult",
    "ConflictMode",
    "Housekeeper",
    "InvalidInputError",
    "Job",
    "JobClass",
    "JobEvent",
    "JobRecord",
    "JobStatus",
    "Machine",
    "MachineState",
    "MemoryStore",
    "Plan",
    "Planner",
    "RealClock",
    "Refusal",
    "RefusalKind",
    "SimClock",
    "StoreLimits",
    "SubmitResult",
    "TaskGroup",
    "TaskOutcome",
    "TaskState",
    "TransactionMode",
    "add_machines",
    "apply_event",
    "cancel_job",
    "check_store",
    "claim_jobs",
    "group_of_task",
    "job_of_task",
    "max_gang_machines",
    "park_job",
    "parse_task_id",
    "purge_finished",
    "release_claim",
    "release_tasks",
    "set_machine_state",
    "submit_jobs",
    "task_id",
    "task_state",
    "validate_claims",
]
