"""Versioned, compact encoding of store values.

Every value is compact JSON with a format version `"v"`. Vectors are lists in
RESOURCE_NAMES order for that version. A value that cannot be decoded raises
CorruptValueError naming the key, never a bare KeyError deep in a scheduler.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from . import resources as res
from .errors import CorruptValueError, InvalidInputError, PartialRecordError
from .json_values import FORMAT_VERSION
from .json_values import decoding as _decoding
from .json_values import encode_json as _encode
from .json_values import load_versioned as _load
from .model import (
    AllocationRecord,
    Job,
    JobClass,
    JobRecord,
    JobStatus,
    Machine,
    MachineState,
    TaskGroup,
    TransactionMode,
    check_labels,
    machines_checked_in_bulk,
)

INLINE_TASKS = 64  # jobs with more tasks keep their bindings in shards (cellstate.shards)


def is_sharded(job: Job) -> bool:
    return job.task_count > INLINE_TASKS


# -- machines ---------------------------------------------------------------


def encode_machine(m: Machine) -> bytes:
    obj = {"v": FORMAT_VERSION, "id": m.id, "cap": list(m.capacity), "labels": m.labels, "state": m.state.value}
    if m.state_by:  # absent means unknown, so values written before the field existed still decode
        obj["by"] = m.state_by
    return _encode(obj)


def decode_machine(key: str, raw: bytes) -> Machine:
    obj = _load(key, raw)
    with _decoding(key):
        try:
            return Machine(obj["id"], tuple(obj["cap"]), obj.get("labels") or {}, MachineState(obj["state"]),
                           obj.get("by", ""))
        except InvalidInputError as exc:
            raise CorruptValueError(key, str(exc)) from None


def decode_machines(kvs) -> list[Machine]:
    """decode_machine over many (key, value) records, as one JSON parse of them all: a
    snapshot of 100,000 machines spends more in json.loads' per-call overhead than in
    parsing. A value that does not parse sends every record through decode_machine, so the
    error names its key exactly as decoding one by one would."""
    try:
        objs = json.loads(b"[" + b",".join(kv.value for kv in kvs) + b"]")
    except (UnicodeDecodeError, ValueError):
        objs = None
    if objs is None or len(objs) != len(kvs):  # a value that is not one JSON document each
        return [decode_machine(kv.key, kv.value) for kv in kvs]
    try:
        fields = [(o["id"], tuple(o["cap"]), o.get("labels") or {}, o["state"], o.get("by", "")) for o in objs
                  if o["v"] == FORMAT_VERSION]
    except (TypeError, KeyError, AttributeError):
        fields = []
    bulk = machines_checked_in_bulk(fields) if len(fields) == len(objs) else None
    if bulk is not None:
        return bulk
    out = []  # something is off: record by record, so the error names its key
    for kv, obj in zip(kvs, objs, strict=True):
        if not isinstance(obj, dict) or obj.get("v") != FORMAT_VERSION:
            out.append(decode_machine(kv.key, kv.value))  # raises, naming the key
            continue
        with _decoding(kv.key):
            try:
                out.append(Machine(obj["id"], tuple(obj["cap"]), obj.get("labels") or {},
                                   MachineState(obj["state"]), obj.get("by", "")))
            except InvalidInputError as exc:
                raise CorruptValueError(kv.key, str(exc)) from None
    return out


# A machine record exactly as encode_machine writes it, with no escape in it: the fast path
# of machine_table. Groups: id, capacity, and the rest (labels, state, who set it).
_NUM = r"(?:0|[1-9][0-9]{0,17})"  # fits int64; JSON allows no leading zero
_SPEC_LINE = re.compile(
    r'^\{"v":' + str(FORMAT_VERSION) + r',"id":"([A-Za-z0-9][A-Za-z0-9._:-]{0,127})","cap":\[('
    + ",".join([_NUM] * res.NUM_RESOURCES)
    + r')\],"labels":(\{[^\\\n]*\},"state":"(?:up|draining|down)"(?:,"by":"(?:monitor|operator)")?)\}$', re.M)
_SPEC_TAIL = re.compile(r'(\{.*\}),"state":"([a-z]+)"(?:,"by":"([a-z]*)")?')


class MachineTable(NamedTuple):
    """A snapshot's machine records as columns (machine_table)."""

    ids: list[str]
    capacity_text: str  # every record's capacity vector, comma-separated, in record order
    shapes: list[tuple[dict[str, str], MachineState, str]]  # (labels, state, state_by) per record


def machine_table(kvs) -> MachineTable | None:
    """Many machine records as columns, for a snapshot (schedulers/confirmed.py): one
    regex pass over all the values and one parse and check per distinct (labels, state,
    state_by), which records share: a 100,000-machine cell has a few hundred. The shape
    tuples (and their label dicts) are shared between records: read them, never change
    them. None when any record is not exactly as encode_machine writes it (an escape, a
    float, another field order, a label check failing): decode_machines then takes them
    one by one and names the key of a bad one."""
    try:
        text = b"\n".join([kv.value for kv in kvs]).decode("ascii")
    except UnicodeDecodeError:
        return None
    rows = _SPEC_LINE.findall(text)
    if len(rows) != len(kvs) or text.count("\n") != max(0, len(kvs) - 1):  # every line one whole record
        return None
    memo: dict[str, tuple[dict[str, str], MachineState, str]] = {}
    shapes = []
    for tail in [r[2] for r in rows]:
        shape = memo.get(tail)
        if shape is None:
            shape = memo[tail] = _machine_shape(tail)  # type: ignore[assignment]
            if shape is None:
                return None
        shapes.append(shape)
    return MachineTable([r[0] for r in rows], ",".join([r[1] for r in rows]), shapes)


def _machine_shape(tail: str) -> tuple[dict[str, str], MachineState, str] | None:
    labels_json, state, by = _SPEC_TAIL.fullmatch(tail).groups()  # type: ignore[union-attr]
    try:
        labels = json.loads(labels_json)
        if type(labels) is not dict:
            return None
        return check_labels("machine", labels), MachineState(state), by or ""
    except (ValueError, InvalidInputError):
        return None


# -- allocation records (hot path: keep these lean) -------------------------


def _ints(v) -> str:
    return ",".join(map(str, v))


_REQUEST_TEXT: dict[tuple, str] = {}  # a request vector's text: a cell has few task shapes
_REQUEST_TEXT_MAX = 4096


def _request_text(r) -> str:
    text = _REQUEST_TEXT.get(r)
    if text is None:
        text = _ints(r)
        if len(_REQUEST_TEXT) < _REQUEST_TEXT_MAX and type(r) is tuple:
            _REQUEST_TEXT[r] = text
    return text


def _task_entries(tasks) -> str:
    return ",".join([f'"{t}":[{_request_text(r)}]' for t, r in tasks.items()])


def encode_alloc(a: AllocationRecord) -> bytes:
    """Hand-formatted: this runs once per touched machine per commit. Safe without JSON
    escaping because task ids are validated to [A-Za-z0-9._:/-] (model.check_id)."""
    if a.encoded_tasks is None:
        a.encoded_tasks = _task_entries(a.tasks)
    return f'{{"v":{FORMAT_VERSION},"u":[{_ints(a.used)}],"n":{len(a.tasks)},"t":{{{a.encoded_tasks}}}}}'.encode()


# What encode_alloc writes first: version, used vector, task count. A local copy of a big
# cell reads just this at its snapshot and decodes the task map only for the machines it
# touches (schedulers/confirmed.py), so a snapshot costs a regex per machine, not a parse.
_ALLOC_HEAD = re.compile(rb'\{"v":%d,"u":\[%s\],"n":(\d+),"t":\{'
                         % (FORMAT_VERSION, b",".join([rb"(-?\d+)"] * res.NUM_RESOURCES)))


def alloc_summary(raw: bytes) -> tuple[res.Vector, int] | None:
    """(used, number of tasks) read off the head of an encoded allocation record, or None
    when the value does not start the way encode_alloc writes it (then decode it whole)."""
    m = _ALLOC_HEAD.match(raw)
    if m is None or not raw.endswith(b"}}"):
        return None
    *used, n = map(int, m.groups())
    return tuple(used), n


_ONE_HEAD = rb'\{"v":%d,"u":\[%s\],"n":(?:0|[1-9][0-9]{0,8})' % (
    FORMAT_VERSION, b",".join([rb"(?:0|[1-9][0-9]{0,17})"] * res.NUM_RESOURCES))  # int64 amounts, no leading 0
_ALLOC_HEADS = re.compile(rb"(?:%s\n)*%s" % (_ONE_HEAD, _ONE_HEAD))  # newline-joined heads
_DIGITS_ONLY = bytes(b if 48 <= b <= 57 else 32 for b in range(256))  # every byte but a digit to a space


def alloc_heads(values) -> bytes | None:
    """alloc_summary of many values at once, for a snapshot: the numbers of every value's
    head as one space-separated text, 1 + R + 1 per record (format version, used vector,
    task count), for one vectorized parse (schedulers/confirmed.py); None when any value is
    not as encode_alloc writes it (then take them one by one)."""
    heads = [v[:v.find(b',"t":{')] for v in values]
    joined = b"\n".join(heads)
    if values and (joined.count(b"\n") != len(values) - 1 or not _ALLOC_HEADS.fullmatch(joined)
                   or not all([v.endswith(b"}}") for v in values])):
        return None  # a value holding a newline, or not as encode_alloc writes it
    return joined.translate(_DIGITS_ONLY)


def held_in_encoded_alloc(raw: bytes, task_ids) -> list[str]:
    """Those of `task_ids` that an allocation record holds, read off its bytes without parsing
    them, for a value alloc_summary accepts (as encode_alloc writes it). Its task map's
    entries are `"<task id>":[<request>]`; a task id always has a "/" (model.task_id), which
    none of the record's other member names has ("u" is not a task), and the entries' values
    are integer vectors, so that text is in the value exactly when the task is a key of the map."""
    return [t for t in task_ids if "/" in t and b'"%s":[' % t.encode() in raw]


def alloc_with_tasks(a: AllocationRecord, added: dict) -> AllocationRecord:
    """a.with_tasks(added), carrying the encoded task entries forward, so encoding the
    new record costs the added tasks only, not every task already on the machine."""
    new = a.with_tasks(added)
    if a.encoded_tasks is not None and a.tasks.keys().isdisjoint(added.keys()):  # looks up the added only
        more = _task_entries(added)
        new.encoded_tasks = f"{a.encoded_tasks},{more}" if a.encoded_tasks and more else (a.encoded_tasks or more)
    return new


def decode_alloc(key: str, raw: bytes) -> AllocationRecord:
    obj = _load(key, raw)
    with _decoding(key):
        used = tuple(obj["u"])
        tasks = {tid: tuple(r) for tid, r in obj["t"].items()}
        if len(used) != res.NUM_RESOURCES or any(not isinstance(x, int) for x in used):
            raise CorruptValueError(key, f"used vector {obj['u']!r} is malformed")
        if "n" in obj and obj["n"] != len(tasks):
            raise CorruptValueError(key, f"says {obj['n']!r} tasks but holds {len(tasks)}")
        return AllocationRecord(used, tasks, _tasks_text(raw, obj))


_TASKS_OPEN = b',"t":{'
_ALLOC_FIELDS = ["v", "u", "n", "t"]


def _tasks_text(raw: bytes, obj: dict[str, Any]) -> str | None:
    """The task entries of a record as encode_alloc wrote it, straight from its bytes, so the
    next commit on the machine encodes only the tasks it adds (alloc_with_tasks); None when
    the record was written otherwise. With exactly encode_alloc's fields in its order, "t" is
    the last member, so its object's body runs from its opening to the value's closing "}}";
    a value with spaces or other members there gives None."""
    if list(obj) != _ALLOC_FIELDS or not raw.endswith(b"}}"):
        return None
    start = raw.find(_TASKS_OPEN)
    if start < 0 or not raw.isascii():
        return None
    return raw[start + len(_TASKS_OPEN):-2].decode("ascii")


# -- jobs -------------------------------------------------------------------


def job_to_obj(job: Job) -> dict[str, Any]:
    return {**_job_head(job), "groups": _groups_obj(job.groups)}


def _job_head(job: Job) -> dict[str, Any]:
    """job_to_obj's fields before "groups", in their order."""
    return {"id": job.id, "class": job.job_class.value, "prio": job.priority, "mode": job.mode.value,
            "tp": job.traceparent, "maxf": job.max_failures}


def _groups_obj(groups) -> list[dict[str, Any]]:
    return [{"name": g.name, "n": g.count, "req": list(g.request), "labels": g.labels, "diff": g.different_machines,
             "dur": g.duration_s} for g in groups]


def encode_groups(groups) -> bytes:
    """The "groups" of encode_job_part: jobs that share their groups (a bulk's, api/submit.py)
    encode them once."""
    return _encode(_groups_obj(groups))


def job_from_obj(obj: dict[str, Any]) -> Job:
    groups = tuple(
        TaskGroup(g["name"], g["n"], tuple(g["req"]), g.get("labels") or {}, bool(g.get("diff")), g.get("dur"))
        for g in obj["groups"]
    )
    return Job(obj["id"], groups, JobClass(obj["class"]), obj["prio"], TransactionMode(obj["mode"]), obj.get("tp"),
               obj.get("maxf", 3))


def encode_job_part(job: Job, groups_part: bytes | None = None) -> bytes:
    """The job's own part of its record, as encode_job writes it: a submission encodes it
    once for its size check and splices it into the record (`encode_job(r, part)`).
    `groups_part`: encode_groups(job.groups), given when the caller has it; the same bytes."""
    if groups_part is None:
        return _encode(job_to_obj(job))
    return _encode(_job_head(job))[:-1] + b',"groups":' + groups_part + b"}"


_JOB_HEAD = b'{"v":%d,"job":' % FORMAT_VERSION


def encode_job(r: JobRecord, job_part: bytes | None = None) -> bytes:
    """A small job's record holds its bindings; a sharded one holds counts (cellstate.shards).
    `job_part`: encode_job_part(r.job), given when the caller has it; the bytes are the same."""
    if job_part is not None:
        rest = _record_rest(r)
        return _JOB_HEAD + job_part + b"," + _encode(rest)[1:]
    return _encode({"v": FORMAT_VERSION, "job": job_to_obj(r.job), **_record_rest(r)})


def record_tail(r: JobRecord) -> bytes:
    """encode_job(r)'s bytes after the job's part (`{"v":1,"job":<part>` before them). A new
    job's tail depends only on its submission time, queue sequence and whether it is sharded:
    a submission encodes it once for all its jobs (`splice_record`)."""
    return b"," + _encode(_record_rest(r))[1:]


def splice_record(job_part: bytes, tail: bytes) -> bytes:
    """encode_job(r, job_part), given r's record_tail: the same bytes."""
    return _JOB_HEAD + job_part + tail


def _record_rest(r: JobRecord) -> dict[str, Any]:
    """The record's fields after "v" and "job", in their encoded order."""
    if is_sharded(r.job):
        if not r.loaded:
            raise PartialRecordError(f"job {r.job.id}: its shards were not read; refusing to write counts")
        bindings: dict[str, Any] = {"nb": len(r.bound), "nd": len(r.done), "ns": r.next_shard}
    else:
        bindings = {"bound": r.bound, "done": sorted(r.done)}
    if r.history is not None:  # absent on most records: a first attempt without conflicts
        bindings["hist"] = r.history
    if r.segment:  # only while the job waits in a queue segment
        bindings["seg"] = r.segment
    return {
        "status": r.status.value,
        **bindings,
        "reason": r.reason,
        "sub": r.submitted_at,
        "first": r.first_attempt_at,
        "placed": r.placed_at,
        "fin": r.finished_at,
        "fails": r.failures,
        "qs": r.queue_seq,
        "why": r.refusal,
    }


def decode_job(key: str, raw: bytes) -> JobRecord:
    obj = _load(key, raw)
    with _decoding(key):
        try:
            job = job_from_obj(obj["job"])
        except InvalidInputError as exc:
            raise CorruptValueError(key, str(exc)) from None
        rec = JobRecord(job, JobStatus(obj["status"]), {}, set(), obj.get("reason", ""), obj.get("sub", 0.0),
                        obj.get("first"), obj.get("placed"), obj.get("fin"), obj.get("fails", 0), obj.get("qs", ""),
                        obj.get("why"))
        rec.history = obj.get("hist")
        rec.segment = str(obj.get("seg", ""))
        if is_sharded(job):  # bindings live in shards: attach_shards fills them from the same read
            rec.shard_counts, rec.next_shard, rec.loaded = (int(obj["nb"]), int(obj["nd"])), int(obj["ns"]), False
        else:
            rec.bound, rec.done = dict(obj["bound"]), set(obj.get("done", ()))
        return rec


def encode_obj(obj: dict[str, Any]) -> bytes:
    """Small auxiliary values (queue entries, claims, audit): versioned JSON objects."""
    return _encode({"v": FORMAT_VERSION, **obj})


def decode_obj(key: str, raw: bytes) -> dict[str, Any]:
    return _load(key, raw)
