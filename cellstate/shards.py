"""Job bindings that scale: small jobs inline, large jobs in shards.

A job of at most INLINE_TASKS tasks keeps its bindings (task -> machine) and its done
tasks inside its job record, as one value. A larger job keeps them in shards,
/<cell>/bind/<job>/<seq>, one shard per commit txn that bound its tasks; the job
record then holds only counts (bound, done) and the next shard number
(docs/architecture.md, "Key schema").

Why: every commit chunk must rewrite the job record (it is the compare that keeps "a
task is bound at most once" airtight), so a record holding 20,000 bindings would be
rewritten whole by every chunk, and would itself exceed etcd's 1.5 MiB request limit.
With shards, a chunk writes the small record plus one new shard of its own bindings.

The record's counts are the check that a read is whole: a record and its shards are
always read in one txn (one revision); `attach_shards` refuses a set of shards that
does not add up to the counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from . import codec
from .codec import INLINE_TASKS, is_sharded
from .errors import CorruptValueError
from .model import JobRecord
from .store import KeyValue

__all__ = ["INLINE_TASKS", "attach_shards", "encode_shard", "group_by_job", "is_sharded", "job_of_shard"]


def encode_shard(bound: Mapping[str, str], done: Iterable[str]) -> bytes:
    """Hand-formatted like allocation records: ids are validated to [A-Za-z0-9._:/-]."""
    b = ",".join(f'"{t}":"{m}"' for t, m in bound.items())
    d = ",".join(f'"{t}"' for t in sorted(done))
    return f'{{"v":1,"b":{{{b}}},"d":[{d}]}}'.encode()


def shard_seq(key: str) -> int:
    return int(key.rsplit("/", 1)[1])


def job_of_shard(key: str) -> str:
    return key.rsplit("/", 2)[1]


def group_by_job(kvs: Iterable[KeyValue]) -> dict[str, list[KeyValue]]:
    out: dict[str, list[KeyValue]] = defaultdict(list)
    for kv in kvs:
        out[job_of_shard(kv.key)].append(kv)
    return out


def attach_shards(rec: JobRecord, kvs: Iterable[KeyValue]) -> JobRecord:
    """Fill a sharded record's bindings from its shards (read in the same txn)."""
    if not is_sharded(rec.job):
        return rec
    bound: dict[str, str] = {}
    done: set[str] = set()
    shard_of: dict[str, int] = {}
    for kv in kvs:
        obj = codec.decode_obj(kv.key, kv.value)
        seq = shard_seq(kv.key)
        try:
            for t, m in obj["b"].items():
                bound[t] = m
                shard_of[t] = seq
            for t in obj["d"]:
                done.add(t)
                shard_of[t] = seq
        except (KeyError, AttributeError, TypeError) as exc:
            raise CorruptValueError(kv.key, f"malformed shard: {exc!r}") from None
    expect_bound, expect_done = rec.shard_counts
    if len(bound) != expect_bound or len(done) != expect_done:
        raise CorruptValueError(
            f"job {rec.job.id} shards",
            f"{len(bound)} bound and {len(done)} done in shards, the record says {expect_bound} and "
            f"{expect_done}: shards and record were not read together")
    rec.bound, rec.done, rec.shard_of, rec.loaded = bound, done, shard_of, True
    return rec
