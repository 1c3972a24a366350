"""Scoring-kernel benchmark: (machine, task group) pairs scored per second, top-k included.

    python -m loadtests.bench_kernels [--quick] [--json] [--policy spread]

Rows: NumPy (and CuPy when a GPU is usable) at 1k, 10k and 100k machines x 1k task
groups, and 100k x 10k with its peak memory; the scalar reference timed on a small
sample. ``numpy_over_reference`` is the NumPy / reference speed ratio at 10k machines
(target >= 100). With --json the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc

import numpy as np

from cellsched.gpu import PRESETS, GroupSpec, MachineColumns, reference, score_topk
from cellsched.gpu.backend import cupy_module

# Machine shapes (cpu mCPU, memory MiB, gpus) and their share of the cell.
SHAPES = [((16000, 65536, 0), 0.45), ((32000, 131072, 0), 0.3), ((64000, 262144, 0), 0.15), ((64000, 524288, 8), 0.1)]


def make_cell(n: int, rng: np.random.Generator, xp) -> MachineColumns:
    shapes = np.array([s for s, _ in SHAPES], dtype=np.int64)
    cap = shapes[rng.choice(len(SHAPES), size=n, p=[p for _, p in SHAPES])]
    used = (cap * rng.uniform(0, 0.8, size=(n, 1))).astype(np.int64)  # 0-80% full
    return MachineColumns([f"m{i}" for i in range(n)], cap, used, xp=xp)


def make_groups(t: int, rng: np.random.Generator) -> list[GroupSpec]:
    cpu = rng.choice([250, 500, 1000, 2000, 4000, 8000], size=t)
    mem = rng.choice([512, 1024, 4096, 8192, 16384], size=t)
    gpu = np.where(rng.uniform(size=t) < 0.05, rng.choice([1, 2, 4], size=t), 0)
    return [GroupSpec((int(c), int(m), int(g)), count=1) for c, m, g in zip(cpu, mem, gpu, strict=True)]


def _sync(xp) -> None:
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def time_scoring(xp, n: int, t: int, policy, *, fused: bool | None = None, min_seconds: float = 0.5) -> dict:
    rng = np.random.default_rng(n + t)
    cols, groups = make_cell(n, rng, xp), make_groups(t, rng)
    score_topk(cols, groups[: min(t, 8)], policy, fused=fused)  # warm-up: kernel compilation, caches
    _sync(xp)
    runs, start = 0, time.perf_counter()
    while True:
        score_topk(cols, groups, policy, fused=fused)
        _sync(xp)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or runs >= 20:
            break
    seconds = elapsed / runs
    return {"machines": n, "groups": t, "seconds": seconds, "pairs_per_s": n * t / seconds}


def time_reference(policy, n: int = 400, t: int = 10) -> dict:
    rng = np.random.default_rng(7)
    cols, groups = make_cell(n, rng, np), make_groups(t, rng)
    machines = [reference.RefMachine(tuple(map(int, c)), tuple(map(int, u))) for c, u in zip(cols.host_capacity, cols.host_used, strict=True)]
    start = time.perf_counter()
    for g in groups:
        reference.topk(policy, machines, g, policy.top_k)
    seconds = time.perf_counter() - start
    return {"machines": n, "groups": t, "seconds": seconds, "pairs_per_s": n * t / seconds}


def peak_numpy(n: int, t: int, policy) -> dict:
    rng = np.random.default_rng(1)
    cols, groups = make_cell(n, rng, np), make_groups(t, rng)
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    score_topk(cols, groups, policy)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"machines": n, "groups": t, "seconds": seconds, "pairs_per_s": n * t / seconds, "peak_bytes": peak}


def peak_cupy(cp, n: int, t: int, policy) -> dict:
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    result = time_scoring(cp, n, t, policy, min_seconds=1.0)
    result["peak_bytes"] = pool.total_bytes()  # the pool keeps what the run needed
    return result


def run(quick: bool, policy_name: str) -> dict:
    policy = PRESETS[policy_name]
    sizes = [1_000, 2_000, 4_000] if quick else [1_000, 10_000, 100_000]
    groups = 50 if quick else 1_000
    big = (10_000, 200) if quick else (100_000, 10_000)
    ratio_at = sizes[1]
    rows = []
    for n in sizes:
        rows.append({"backend": "numpy", **time_scoring(np, n, groups, policy, min_seconds=0.2 if quick else 1.0)})
    rows.append({"backend": "numpy", **peak_numpy(*big, policy)})
    ref = time_reference(policy, *((100, 4) if quick else (400, 10)))
    rows.append({"backend": "reference", **ref})
    cp = cupy_module()
    if cp is not None:
        for n in sizes:
            rows.append({"backend": "cupy", **time_scoring(cp, n, groups, policy)})
        rows.append({"backend": "cupy-xp", **time_scoring(cp, sizes[-1], groups, policy, fused=False)})
        rows.append({"backend": "cupy", **peak_cupy(cp, *big, policy)})
    numpy_at = next(r for r in rows if r["backend"] == "numpy" and r["machines"] == ratio_at)
    summary = {
        "policy": policy.name,
        "top_k": policy.top_k,
        "quick": quick,
        "rows": rows,
        "numpy_over_reference": numpy_at["pairs_per_s"] / ref["pairs_per_s"],
        "ratio_at_machines": ratio_at,
        "cupy": cp is not None,
    }
    gpu_big = [r for r in rows if r["backend"] == "cupy" and (r["machines"], r["groups"]) == big]
    if gpu_big:
        summary["cupy_big_ms"] = gpu_big[0]["seconds"] * 1e3
    return summary


def print_table(summary: dict) -> None:
    print(f"scoring + top-{summary['top_k']} per group, policy {summary['policy']}")
    print(f"{'backend':<10} {'machines':>9} {'groups':>7} {'time':>11} {'pairs/s':>12} {'peak MiB':>9}")
    for r in summary["rows"]:
        peak = f"{r['peak_bytes'] / 2**20:9.1f}" if "peak_bytes" in r else f"{'':>9}"
        print(f"{r['backend']:<10} {r['machines']:>9,} {r['groups']:>7,} {r['seconds'] * 1e3:>9.1f}ms {r['pairs_per_s']:>12.3g} {peak}")
    print(f"numpy_over_reference at {summary['ratio_at_machines']:,} machines: {summary['numpy_over_reference']:.0f}x (target >= 100)")
    if "cupy_big_ms" in summary:
        print(f"cupy 100k x 10k incl. top-k: {summary['cupy_big_ms']:.1f} ms (target <= 20 ms)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds in all (smoke test)")
    parser.add_argument("--json", action="store_true", help="print a JSON object as the last line")
    parser.add_argument("--policy", default="spread", choices=[p for p in PRESETS if p != "random_first_fit"])
    args = parser.parse_args(argv)
    summary = run(args.quick, args.policy)
    print_table(summary)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
