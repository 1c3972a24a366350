"""Regenerate loadtests/data/google2011_sample from ../shared/data/google2011.

    .venv/bin/python tools/make_google_sample.py [--source DIR] [--dest DIR]

The cut is deterministic (see SampleSpec), so rerunning it on the same source gives
byte-identical files; tests/test_trace_google2011.py checks that against the shipped copy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellsched.loadtests.traces.sample import (
    SAMPLE_DIR,
    SampleSpec,
    build_sample,
    sample_size_bytes,
    shared_trace_dir,
)

SIZE_LIMIT = 1_000_000  # the sample ships in the repository: keep it small


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=shared_trace_dir(), help="the real google2011 folder")
    parser.add_argument("--dest", type=Path, default=SAMPLE_DIR, help="where the sample goes")
    args = parser.parse_args(argv)
    if not (args.source / "task_events").is_dir():
        print(f"no Google 2011 trace at {args.source}", file=sys.stderr)
        return 2
    counts = build_sample(args.source, args.dest, SampleSpec())
    size = sample_size_bytes(args.dest)
    print(f"wrote {args.dest}: {size:,} bytes, " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if size > SIZE_LIMIT:
        print(f"sample is over {SIZE_LIMIT:,} bytes: tighten SampleSpec", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
