"""Where the Google 2011 trace lives, and how the shipped sample is cut from it.

The real files sit in ../shared/data/google2011, outside the repository, and are not
everywhere. A small attributed sample with the same layout ships in
loadtests/data/google2011_sample, so the reader and the demo work without them.

Paths come from this file's location: `parents[1]` is `loadtests/` (its `data/` holds the
sample) and `parents[2]` is the repository root in a checkout (editable install), whose
parent holds `shared/data`.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SHARED_DATA_ENV = "CELLSCHED_SHARED_DATA"  # overrides ../shared/data
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "google2011_sample"



def shared_data_dir() -> Path:
    """../shared/data relative to the repository root, or $CELLSCHED_SHARED_DATA."""
    override = os.environ.get(SHARED_DATA_ENV)
    return Path(override) if override else _PACKAGE_ROOT.parent / "shared" / "data"


def shared_trace_dir() -> Path:
    return shared_data_dir() / "google2011"


def sample_trace_dir() -> Path:
    return SAMPLE_DIR


def default_trace_dir() -> Path:
    """The real trace when it is here, else the shipped sample."""
    real = shared_trace_dir()
    return real if (real / "task_events").is_dir() else SAMPLE_DIR


# ---------------------------------------------------------------------------------------
# Cutting the sample (tools/make_google_sample.py is the command line)


@dataclass(frozen=True)
class SampleSpec:
    """How the sample is cut. The defaults give about 330 KB of gzip files.

    Jobs are taken whole from one task_events part in the order of their first SUBMIT,
    skipping any job with more rows than `max_rows_per_job` (one crash-looping job alone
    has 111,164 SUBMITs in the real window), until `submits` SUBMIT rows are in. Machines
    are the first `machines` machine IDs of the machine table plus every machine with a
    blank-capacity ADD, so the reader's skip path is exercised; their rows are kept up to
    the last task row of the sample.
    """

    part: str = "00235"
    submits: int = 5_000
    max_rows_per_job: int = 2_000
    machines: int = 3_000


NOTICE = """\
# Google cluster-usage trace 2011: a small sample

These files are a subset of the Google cluster-usage trace **clusterdata-2011-2**,
licensed under the Creative Commons Attribution 4.0 International licence (CC-BY 4.0,
https://creativecommons.org/licenses/by/4.0/).

Cite: Charles Reiss, John Wilkes, Joseph L. Hellerstein, "Google cluster-usage traces:
format + schema", Google Inc., 2011. https://github.com/google/cluster-data

Changes from the original: rows were selected, not altered. Each kept line is byte for
byte the original line; files were re-compressed. `schema.csv` is the original schema
file. The selection is made by `tools/make_google_sample.py` from
../shared/data/google2011 and is reproducible:

- task_events and job_events: every row of {jobs} whole jobs from part {part}, taken in
  order of their first SUBMIT, skipping jobs with more than {max_rows_per_job} task rows
  ({submits} SUBMIT rows, {task_rows} task rows, {job_rows} job rows);
- machine_events: {machines} machines (the first {first_machines} machine IDs of the
  table, plus every machine with a blank-capacity ADD), their rows up to the sample's
  last task row ({machine_rows} rows).

Layout and schema are the original's: `<table>/part-NNNNN-of-MMMMM.csv.gz`, no headers.
"""


def _gzip_lines(lines: list[str]) -> bytes:
    # mtime=0 and no file name in the header, so a rebuild is byte-identical.
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write("".join(line + "\n" for line in lines).encode())
    return out.getvalue()


def _rows(path: Path) -> list[tuple[str, list[str]]]:
    """(raw line, fields) per row. The source has no quoting (hashes are base64), so a
    plain split is exact, and the raw line is written back unchanged."""
    with gzip.open(path, "rt", newline="") as text:
        return [(line, line.split(",")) for line in text.read().splitlines()]


def _choose_jobs(task_rows: list[tuple[str, list[str]]], spec: SampleSpec) -> tuple[set[str], int]:
    rows_per_job = Counter(f[2] for _, f in task_rows)
    submits_per_job = Counter(f[2] for _, f in task_rows if f[5] == "0")
    chosen: set[str] = set()
    submits = 0
    for _, f in task_rows:
        job = f[2]
        if f[5] != "0" or job in chosen or rows_per_job[job] > spec.max_rows_per_job:
            continue
        chosen.add(job)
        submits += submits_per_job[job]
        if submits >= spec.submits:
            break
    return chosen, submits


def _choose_machines(machine_rows: list[tuple[str, list[str]]], until_us: int, spec: SampleSpec) -> set[str]:
    keep: set[str] = set()
    for _, f in machine_rows:
        if len(keep) >= spec.machines:
            break
        keep.add(f[1])
    blank_adds = {
        f[1] for _, f in machine_rows if f[2] == "0" and "" in (f[4], f[5]) and int(f[0]) <= until_us
    }
    return keep | blank_adds


def build_sample(source: Path, dest: Path, spec: SampleSpec = SampleSpec()) -> dict[str, int]:
    """Write the sample under `dest` (replacing its tables) from the real trace at `source`."""
    task_file = next((source / "task_events").glob(f"part-{spec.part}-of-*.csv.gz"))
    job_file = next((source / "job_events").glob(f"part-{spec.part}-of-*.csv.gz"))
    machine_file = next((source / "machine_events").glob("part-*.csv.gz"))

    task_rows = _rows(task_file)
    jobs, submits = _choose_jobs(task_rows, spec)
    task_kept = [line for line, f in task_rows if f[2] in jobs]
    job_kept = [line for line, f in _rows(job_file) if f[2] in jobs]
    until_us = int(task_kept[-1].split(",", 1)[0])
    machine_rows = _rows(machine_file)
    machines = _choose_machines(machine_rows, until_us, spec)
    machine_kept = [line for line, f in machine_rows if f[1] in machines and int(f[0]) <= until_us]

    for table, path, rows in (
        ("task_events", task_file, task_kept),
        ("job_events", job_file, job_kept),
        ("machine_events", machine_file, machine_kept),
    ):
        # Replace only what this function writes; never a whole folder it was handed.
        if (dest / table).exists():
            shutil.rmtree(dest / table)
        (dest / table).mkdir(parents=True)
        (dest / table / path.name).write_bytes(_gzip_lines(rows))
    shutil.copyfile(source / "schema.csv", dest / "schema.csv")
    counts = {
        "jobs": len(jobs), "submits": submits, "task_rows": len(task_kept), "job_rows": len(job_kept),
        "machines": len(machines), "first_machines": spec.machines, "machine_rows": len(machine_kept),
    }  # fmt: skip
    notice = NOTICE.format(part=spec.part, max_rows_per_job=spec.max_rows_per_job, **counts)
    (dest / "NOTICE.md").write_text(notice)
    return counts


def sample_size_bytes(directory: Path = SAMPLE_DIR) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
