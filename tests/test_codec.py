"""The versioned encoding round-trips exactly, including the hand-formatted allocation records."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsched.cellstate import codec
from cellsched.cellstate.errors import CorruptValueError
from cellsched.cellstate.model import AllocationRecord, Job, JobRecord, JobStatus, TaskGroup

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)
vec = st.tuples(*[st.integers(0, 10**12)] * 3)


@settings(deadline=None, max_examples=200)
@given(used=vec, tasks=st.dictionaries(st.builds(lambda j, g, i: f"{j}/{g}/{i}", ids, st.integers(0, 63),
                                                 st.integers(0, 10**5)), vec, max_size=20))
def test_codec_alloc_round_trip_is_valid_json(used, tasks):
    rec = AllocationRecord(used, tasks)
    raw = codec.encode_alloc(rec)
    assert json.loads(raw) == {"v": 1, "u": list(used), "n": len(tasks), "t": {k: list(v) for k, v in tasks.items()}}
    assert codec.decode_alloc("k", raw) == rec
    assert codec.alloc_summary(raw) == (tuple(used), len(tasks))  # the snapshot's fast path agrees


task_ids = st.builds(lambda j, g, i: f"{j}/{g}/{i}", ids, st.integers(0, 63), st.integers(0, 10**5))


@given(used=vec, tasks=st.dictionaries(task_ids, vec, max_size=20), asked=st.lists(task_ids, max_size=8),
       prefixes=st.booleans())
def test_held_in_encoded_alloc_agrees_with_the_decoded_record(used, tasks, asked, prefixes):
    # Asked ids include ones that are prefixes or extensions of held ids ("j/0/1" beside
    # "j/0/12"), and the record's member names: only real keys of the task map count.
    if prefixes:
        asked += [t[:-1] for t in tasks if len(t) > 1] + [t + "0" for t in tasks] + ["v", "u", "n", "t"]
    raw = codec.encode_alloc(AllocationRecord(used, tasks))
    held = set(codec.decode_alloc("/c/node/alloc/m", raw).tasks)
    assert codec.held_in_encoded_alloc(raw, asked) == [t for t in asked if t in held]


def test_codec_alloc_summary_falls_back_and_count_is_checked():
    old_layout = b'{"v":1,"u":[5,6,0],"t":{"j/0/0":[5,6,0]}}'  # written before the count
    assert codec.alloc_summary(old_layout) is None
    assert codec.decode_alloc("k", old_layout).tasks == {"j/0/0": (5, 6, 0)}
    assert codec.alloc_summary(b'{"v":1,"u":[5,6,0],"n":1,"t":{"j/0/0":[5,6,0]') is None  # cut short
    with pytest.raises(CorruptValueError, match="says 2 tasks but holds 1"):
        codec.decode_alloc("k", b'{"v":1,"u":[5,6,0],"n":2,"t":{"j/0/0":[5,6,0]}}')


def test_codec_job_record_round_trip():
    job = Job("j1", (TaskGroup("a", 3, (1, 2, 0), {"zone": "z1"}, True, 12.5),), priority=9)
    rec = JobRecord(job, JobStatus.PLACED, {"j1/0/0": "m1"}, {"j1/0/1"}, "why", 1.0, 2.0, 3.0, None)
    back = codec.decode_job("k", codec.encode_job(rec))
    assert back.job == job and back.bound == rec.bound and back.done == rec.done
    assert (back.status, back.reason, back.placed_at) == (JobStatus.PLACED, "why", 3.0)


@settings(deadline=None, max_examples=200)
@given(before=st.dictionaries(ids, vec, max_size=8), added=st.dictionaries(ids, vec, max_size=8),
       encode_first=st.booleans())
def test_codec_alloc_with_tasks_encodes_like_a_fresh_record(before, added, encode_first):
    used = tuple(sum(v[k] for v in before.values()) for k in range(3))
    rec = AllocationRecord(used, before)
    if encode_first:
        codec.encode_alloc(rec)  # fills the cache that alloc_with_tasks carries forward
    grown = codec.alloc_with_tasks(rec, added)
    fresh = AllocationRecord(grown.used, dict(grown.tasks))
    assert json.loads(codec.encode_alloc(grown)) == json.loads(codec.encode_alloc(fresh))
    assert codec.decode_alloc("k", codec.encode_alloc(grown)) == rec.with_tasks(added)


@settings(deadline=None, max_examples=200)
@given(before=st.dictionaries(ids, vec, max_size=8), added=st.dictionaries(ids, vec, max_size=8),
       layout=st.sampled_from(["encode_alloc", "spaced", "extra member", "old layout", "t first"]))
def test_codec_alloc_decoded_from_bytes_grows_like_a_fresh_record(before, added, layout):
    """decode_alloc carries the task entries' text forward only from bytes as encode_alloc
    writes them; any other layout is encoded afresh. Either way the grown record encodes to
    the same value as one built from scratch."""
    used = tuple(sum(v[k] for v in before.values()) for k in range(3))
    canonical = codec.encode_alloc(AllocationRecord(used, before))
    obj = json.loads(canonical)
    raw = {"encode_alloc": canonical,
           "spaced": json.dumps(obj).encode(),
           "extra member": json.dumps({**obj, "x": {"y": 1}}, separators=(",", ":")).encode(),
           "old layout": json.dumps({k: v for k, v in obj.items() if k != "n"}, separators=(",", ":")).encode(),
           "t first": json.dumps({"t": obj["t"], "v": 1, "u": obj["u"], "n": obj["n"]}, separators=(",", ":")).encode(),
           }[layout]
    rec = codec.decode_alloc("k", raw)
    assert (rec.encoded_tasks is not None) == (layout == "encode_alloc")
    added = {k: v for k, v in added.items() if k not in before}
    grown = codec.alloc_with_tasks(rec, added)
    fresh = AllocationRecord(grown.used, dict(grown.tasks))
    assert codec.encode_alloc(grown) == codec.encode_alloc(fresh)
    assert codec.decode_alloc("k", codec.encode_alloc(grown)) == AllocationRecord(used, before).with_tasks(added)


def test_decode_machines_matches_one_by_one_and_names_the_corrupt_key():
    from cellsched.cellstate.model import Machine, MachineState
    from cellsched.cellstate.store import KeyValue

    machines = [Machine(f"m{i}", (1000 + i, 2048, i % 2), {"zone": f"z{i % 3}"} if i % 2 else {},
                        MachineState.DRAINING if i == 3 else MachineState.UP, "operator" if i == 3 else "")
                for i in range(6)]
    kvs = [KeyValue(f"/c/spec/{m.id}", codec.encode_machine(m), 10 + i, 10 + i, 1) for i, m in enumerate(machines)]
    assert codec.decode_machines(kvs) == [codec.decode_machine(kv.key, kv.value) for kv in kvs] == machines
    assert codec.decode_machines([]) == []
    for bad in (b"{not json", b'{"v":1}', b'{"v":9,"id":"m2","cap":[1,1,0],"labels":{},"state":"up"}',
                b"1,2", b'{"v":1,"id":"bad id!","cap":[1,1,0],"labels":{},"state":"up"}',
                # what the bulk check (model.machines_checked_in_bulk) must send back to one by one:
                b'{"v":1,"id":"m2\\nm3","cap":[1,1,0],"labels":{},"state":"up"}',
                b'{"v":1,"id":"m2","cap":[1,-1,0],"labels":{},"state":"up"}',
                b'{"v":1,"id":"m2","cap":[1,1],"labels":{},"state":"up"}',
                b'{"v":1,"id":"m2","cap":"abc","labels":{},"state":"up"}',
                b'{"v":1,"id":"m2","cap":[1,1,0],"labels":{"zone":["z"]},"state":"up"}',
                b'{"v":1,"id":"m2","cap":[1,1,0],"labels":["zone"],"state":"up"}',
                b'{"v":1,"id":"m2","cap":[1,1,0],"labels":{},"state":"gone"}',
                b'{"v":1,"id":"m2","cap":[1,1,0],"labels":{},"state":"up","by":"someone"}',
                b'{"v":1,"id":7,"cap":[1,1,0],"labels":{},"state":"up"}'):
        broken = kvs[:2] + [KeyValue("/c/spec/m2", bad, 12, 12, 1)] + kvs[3:]
        with pytest.raises(CorruptValueError, match="/c/spec/m2"):
            codec.decode_machines(broken)


def test_machines_checked_in_bulk_build_what_machine_builds_and_refuse_what_it_refuses():
    from cellsched.cellstate.model import Machine, MachineState, machines_checked_in_bulk

    fields = [(f"m{i}", (1000 + i, 2048, 0), {"zone": f"z{i % 3}"}, "draining" if i == 2 else "up",
               "operator" if i == 2 else "") for i in range(5)]
    built = machines_checked_in_bulk(fields)
    assert built == [Machine(i, c, dict(lb), MachineState(st), by) for i, c, lb, st, by in fields]
    assert built is not None and built[2].state is MachineState.DRAINING and not built[2].schedulable
    assert machines_checked_in_bulk([]) == []
    for bad in [("m x", (1, 1, 0), {}, "up", ""), ("m1\nm2", (1, 1, 0), {}, "up", ""),
                ("m1", (1, -1, 0), {}, "up", ""), ("m1", (1, 1, 0), {"-k": "v"}, "up", ""),
                ("m1", (1, 1, 0), {}, "UP", ""), ("m1", (1, 1, 0), {}, "up", "root")]:
        assert machines_checked_in_bulk([fields[0], bad]) is None, bad


def _table_machines(table) -> list:
    """machine_table's columns back as Machines (what the scheduler cache's rows hold)."""
    from cellsched.cellstate.model import Machine

    caps = [int(x) for x in table.capacity_text.split(",")] if table.ids else []
    return [Machine(mid, tuple(caps[3 * k:3 * k + 3]), dict(lb), st, by)
            for k, (mid, (lb, st, by)) in enumerate(zip(table.ids, table.shapes, strict=True))]




@settings(deadline=None, max_examples=200)
@given(rows=st.lists(st.tuples(ids, vec, st.dictionaries(st.from_regex(r"[a-z][a-z0-9./-]{0,8}", fullmatch=True),
                                                           st.text(max_size=12), max_size=3),
                               st.sampled_from(["up", "draining", "down"]),
                               st.sampled_from(["", "monitor", "operator"])), max_size=12))
def test_machine_table_holds_what_decode_machines_decodes(rows):
    from cellsched.cellstate.model import Machine, MachineState
    from cellsched.cellstate.store import KeyValue

    machines = [Machine(mid, cap, lb, MachineState(state), by) for mid, cap, lb, state, by in rows]
    kvs = [KeyValue(f"/c/spec/{m.id}", codec.encode_machine(m), 1, 1, 1) for m in machines]
    table = codec.machine_table(kvs)
    if all(b"\\" not in kv.value for kv in kvs):  # no escape (a quote, a control or non-ASCII character)
        assert table is not None
    if table is not None:
        assert _table_machines(table) == codec.decode_machines(kvs) == machines


def test_machine_table_refuses_what_it_cannot_read_exactly():
    from cellsched.cellstate.store import KeyValue

    good = b'{"v":1,"id":"m1","cap":[1,1,0],"labels":{"zone":"z1"},"state":"up"}'
    shared = codec.machine_table([KeyValue("/c/spec/m1", good, 1, 1, 1), KeyValue("/c/spec/m2",
                                  good.replace(b'"m1"', b'"m2"'), 2, 2, 1)])
    assert shared is not None and shared.shapes[0] is shared.shapes[1]  # one shape per kind
    not_exact = [b'{"v":1,"id":"m1","cap":[1.0,1,0],"labels":{},"state":"up"}',  # a float amount
                 b'{"v": 1, "id": "m1", "cap": [1, 1, 0], "labels": {}, "state": "up"}',  # spaces
                 b'{"v":1,"cap":[1,1,0],"id":"m1","labels":{},"state":"up"}',  # another order
                 b'{"v":1,"id":"m1","cap":[1,1,0],"labels":{"zone":"\\u007a1"},"state":"up"}',  # an escape
                 b'{"v":1,"id":"m1","cap":[1,1,0],"labels":null,"state":"up"}',
                 b'{"v":1,"id":"m1","cap":[1,1,0],"labels":{},"state":"up","by":""}',
                 b'{"v":1,"id":"m1","cap":[01,1,0],"labels":{},"state":"up"}']  # not JSON: decode says so
    refused = [b'{"v":1,"id":"m1","cap":[1,-1,0],"labels":{},"state":"up"}',
               b'{"v":1,"id":"m1","cap":[1,1,0],"labels":{"zone":{"a":"b"}},"state":"up"}',
               b'{"v":1,"id":"m1","cap":[1,1,0],"labels":{"-k":"v"},"state":"up"}',
               b'{"v":1,"id":"m1","cap":[1,1,0],"labels":{"a":"b"},"state":"up"},"state":"down"}',
               b'{"v":1,"id":"m1","cap":[1,1,0],"labels":{},"state":"up"}\n'
               b'{"v":1,"id":"m9","cap":[1,1,0],"labels":{},"state":"up"}',  # two records in one value
               b'{"v":1,"id":"m1","cap":[1,1,0],"labels":{},"state":"up"}\xff',
               b'{"v":1,"id":"m1","cap":[1,1,0],"labels":{},"state":"up"', b""]
    for raw in not_exact + refused:
        kvs = [KeyValue("/c/spec/m0", good.replace(b'"m1"', b'"m0"'), 1, 1, 1), KeyValue("/c/spec/m1", raw, 2, 2, 1)]
        assert codec.machine_table(kvs) is None, raw
    assert codec.machine_table([]) == ([], "", [])


@settings(deadline=None, max_examples=100)
@given(recs=st.lists(st.tuples(vec, st.dictionaries(st.builds(lambda j, i: f"{j}/0/{i}", ids, st.integers(0, 99)),
                                                     vec, max_size=5)), max_size=10))
def test_alloc_heads_hold_what_alloc_summary_reads(recs):
    values = [codec.encode_alloc(AllocationRecord(used, tasks)) for used, tasks in recs]
    heads = codec.alloc_heads(values)
    assert heads is not None
    nums = [int(x) for x in heads.split()]
    assert [(tuple(nums[5 * k + 1:5 * k + 4]), nums[5 * k + 4]) for k in range(len(values))] == \
        [codec.alloc_summary(v) for v in values]


def test_alloc_heads_refuse_any_value_off_the_fast_path():
    good = codec.encode_alloc(AllocationRecord((5, 6, 0), {"j/0/0": (5, 6, 0)}))
    for bad in (b'{"v":1,"u":[5,6,0],"t":{"j/0/0":[5,6,0]}}',  # written before the count
                good[:-1],  # cut short
                b'{"v":1,"u":[5,-6,0],"n":1,"t":{"j/0/0":[5,6,0]}}',
                b'{"v":1,"u":[5,6,0],"n":1\n{"v":1,"u":[5,6,0],"n":1,"t":{"j/0/0":[5,6,0]}}',  # two heads
                b'{"v":2,"u":[5,6,0],"n":1,"t":{"j/0/0":[5,6,0]}}', b""):
        assert codec.alloc_heads([good, bad]) is None, bad
    assert codec.alloc_heads([]) == b""


@settings(deadline=None, max_examples=200)
@given(job=ids, claims=st.integers(0, 10**9), need=st.none() | vec, stuck=st.booleans(),
       holder=st.sampled_from(["", "1f.7", "bench-gate"]))
def test_index_entry_decodes_what_it_encodes_on_either_path(job, claims, need, stuck, holder):
    from cellsched.cellstate.index_entry import _PLAIN, IndexEntry
    from cellsched.cellstate.store import KeyValue

    entry = IndexEntry(job, claims, need, stuck, holder)
    raw = entry.encode()
    assert IndexEntry.decode(KeyValue("/c/queue/k", raw, 1, 1, 1)) == entry
    assert (_PLAIN.fullmatch(raw) is not None) == (need is None and not stuck and claims < 10**9)
    spaced = raw.replace(b",", b", ")  # the same entry, off the fast path
    assert IndexEntry.decode(KeyValue("/c/queue/k", spaced, 1, 1, 1)) == entry


def test_a_new_jobs_record_spliced_from_its_tail_is_encode_jobs_bytes():
    from cellsched.cellstate.index_entry import IndexEntry, index_entry_for_new_job
    from cellsched.cellstate.model import Job, JobRecord, TaskGroup

    small = Job("s-1", (TaskGroup("a", 2, (10, 16, 0), {"team": "x"}),), traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    big = Job("b-1", (TaskGroup("w", codec.INLINE_TASKS + 1, (10, 0, 0)),))
    for job in (small, big):
        rec = JobRecord(job, submitted_at=1764770000.123456, queue_seq="00001764770000123456")
        tail = codec.record_tail(rec)
        assert codec.splice_record(codec.encode_job_part(job), tail) == codec.encode_job(rec)
        assert codec.decode_job("/k", codec.splice_record(codec.encode_job_part(job), tail)).job == job
    for holder in ("", "1a2b.7"):
        assert index_entry_for_new_job("j-1:x", holder) == IndexEntry("j-1:x", holder=holder).encode()


def test_a_job_part_from_its_encoded_groups_is_the_same_bytes():
    from cellsched.cellstate.model import Job, TaskGroup

    groups = (TaskGroup("a", 2, (10, 16, 0), {"team": "x"}, True), TaskGroup("b", 1, (0, 0, 1), {}, False, 5.0))
    for tp in (None, "00-" + "a" * 32 + "-" + "b" * 16 + "-01"):
        job = Job("j-1", groups, priority=5, traceparent=tp, max_failures=7)
        assert codec.encode_job_part(job, codec.encode_groups(job.groups)) == codec.encode_job_part(job)
