"""Every error cellsched raises, as one tree (five are defined in their own packages).

    CellError
    ├── InvalidInputError          bad input, refused whole before anything is written
    │   ├── InvalidResourceError   negative, NaN, non-integer or unknown resource
    │   ├── InvalidJobError        empty or oversized job, bad task group
    │   ├── UnknownMachineError    a plan names a machine the store does not have
    │   ├── UnplaceableRequestError a request larger than any machine in the cell
    │   ├── TraceFormatError       a malformed trace row (names file, line and field)
    │   ├── FutureRevisionError    a compaction asked for a revision the store has not reached
    │   ├── DataNotFoundError      a trace or binary not where it was looked for (also a FileNotFoundError)
    │   └── BodyValidationError    (api) a request body refused whole, answered as FastAPI's validation error
    ├── CorruptValueError          a stored value that cannot be decoded
    ├── ContentionError            an update kept conflicting past its bound of rounds
    ├── InternalInvariantError     a check inside the code failed: a bug, never bad input
    ├── BackendUnavailableError    (gpu.backend) CuPy was forced but no usable CUDA device is present
    ├── BenchmarkError             (loadtests) a benchmark could not produce its measurement
    ├── ApiError                   (api) an HTTP answer: status, title, detail, the field at fault
    ├── ClientError                (cellsched.client) a bad job file, an unreachable API, or its error answer
    ├── PartialRecordError         a sharded job record written without its shards read (a bug)
    ├── SchemaMismatchError        the cell was written in another key layout
    ├── IllegalTransitionError     a job event its status does not allow (cancel a finished job); names both
    ├── TxnLimitError              a txn over the store's ops-per-txn or request-size limit
    │   └── GangTooLargeError      an all-or-nothing plan that cannot fit in one txn
    ├── CompactedError             a watch or read asked for a compacted revision
    ├── LeaseNotFoundError         a lease that expired or never existed
    └── StoreUnavailableError      the store cannot be reached
        └── CommitOutcomeUnknown   sent, but the ack was lost: settle by reading before any retry
"""

from __future__ import annotations


class CellError(Exception):
    """Root of every cellsched store error."""


class InvalidInputError(CellError, ValueError):
    """Input refused whole; nothing was written."""


class InvalidResourceError(InvalidInputError):
    pass


class InvalidJobError(InvalidInputError):
    pass


class UnknownMachineError(InvalidInputError):
    pass


class UnplaceableRequestError(InvalidInputError):
    pass


class TraceFormatError(InvalidInputError):
    def __init__(self, path: str, line: int, field: str, problem: str):
        self.path, self.line, self.field, self.problem = path, line, field, problem
        super().__init__(f"{path}:{line}: field {field!r}: {problem}")


class DataNotFoundError(InvalidInputError, FileNotFoundError):
    pass


class CorruptValueError(CellError):
    def __init__(self, key: str, problem: str):
        self.key = key
        super().__init__(f"cannot decode value at {key!r}: {problem}")


class ContentionError(CellError):
    pass


class InternalInvariantError(CellError):
    pass


class PartialRecordError(CellError):
    pass


class SchemaMismatchError(CellError):
    pass


class IllegalTransitionError(CellError):
    """A job event that the job's status does not allow (cellstate/job_states.py). Nothing was written."""

    def __init__(self, status, event: str, job_id: str = ""):
        self.job_status, self.event, self.job_id = status, event, job_id
        name = getattr(status, "value", status)
        of = f"job {job_id}: " if job_id else ""
        super().__init__(f"{of}event {event!r} is not allowed in status {name!r}")


class TxnLimitError(CellError):
    pass


class GangTooLargeError(TxnLimitError):
    pass


class CompactedError(CellError):
    def __init__(self, requested: int, compacted: int):
        self.requested, self.compacted = requested, compacted
        super().__init__(f"revision {requested} is compacted (compact revision {compacted})")


class LeaseNotFoundError(CellError):
    pass


class StoreUnavailableError(CellError):
    pass


class CommitOutcomeUnknown(StoreUnavailableError):
    """The txn may or may not have been applied. Read the touched keys before retrying."""


class FutureRevisionError(InvalidInputError):
    """A revision the store has not reached yet (compacting the future). Nothing was changed."""

    def __init__(self, requested: int, current: int | None = None):
        self.requested, self.current = requested, current
        at = f"; the store is at {current}" if current is not None else ""
        super().__init__(f"revision {requested} is in the future{at}")
