"""Codec micro-benchmark: this checkout's cellstate/codec.py against the one of another
revision, in one process, alternated (the machines are noisy: ratios within one run).

    python -m loadtests.bench_codec [--against REV] [--rounds 3]

Rows: decoding a job record as a scheduler claims it; decoding a 20-task allocation record,
adding one task and encoding it, as a commit does on each machine it touches. Each cell is
the best of `rounds` alternated timings, in microseconds per operation.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from types import ModuleType

from cellsched.cellstate import codec
from cellsched.cellstate.model import AllocationRecord, Job, JobRecord, JobStatus, TaskGroup

REPO = Path(__file__).resolve().parent.parent


def codec_at(rev: str) -> ModuleType:
    """cellstate/codec.py as it was at `rev`, importable beside this checkout's (its relative
    imports resolve to this checkout's cellstate package)."""
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:cellstate/codec.py"], check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="bench_codec_")) / "codec_then.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("cellsched.cellstate.codec_then", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="d14a8ac", help="the revision whose codec.py to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--number", type=int, default=5000)
    args = ap.parse_args(argv)
    then = codec_at(args.against)
    job = Job("job-123456", (TaskGroup("g0", 7, (500, 1 << 30, 0), {"zone": "a"}),))
    raw_job = codec.encode_job(JobRecord(job, JobStatus.PENDING, {}, set(), "", 1.5, None, None, None, 0,
                                         "00000001234567890", None))
    raw_alloc = codec.encode_alloc(AllocationRecord((5000, 20 << 28, 0),
                                                    {f"job-{i}/0/{i}": (250, 1 << 28, 0) for i in range(20)}))
    added = {"job-x/0/0": (250, 1 << 28, 0)}

    def decode_job(m: ModuleType) -> None:
        m.decode_job("k", raw_job)

    def grow_alloc(m: ModuleType) -> None:
        m.encode_alloc(m.alloc_with_tasks(m.decode_alloc("k", raw_alloc), added))

    print(f"{'operation':48s} {args.against + ' us':>12s} {'now us':>8s} {'now/then':>9s}")
    for name, fn in (("decode a job record", decode_job),
                     ("decode a 20-task allocation, add 1, encode", grow_alloc)):
        best = {"then": float("inf"), "now": float("inf")}
        for _ in range(args.rounds):
            for label, m in (("then", then), ("now", codec)):
                t = min(timeit.repeat(functools.partial(fn, m), number=args.number, repeat=3)) / args.number * 1e6
                best[label] = min(best[label], t)
        print(f"{name:48s} {best['then']:12.2f} {best['now']:8.2f} {best['now'] / best['then']:9.3f}")


if __name__ == "__main__":
    main()
