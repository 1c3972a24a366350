"""The printed tables (the JSON report is the results dict itself)."""

from __future__ import annotations

from collections.abc import Sequence


def print_tables(result: dict) -> None:
    if "k8s" in result:
        k = result["k8s"]
        print(f"\n== k8s scheduler_perf {k['case']} through {k['backend']} (clients: {k['clients']}) ==")
        print(f"   {k['nodes']} nodes of {k['node_capacity'][0]}m/{k['node_capacity'][1]}Mi; "
              f"{k['init_pods']} initial pods (placed first, not measured); "
              f"{k['measure_pods']} measured single-pod jobs of {k['pod_request'][0]}m/{k['pod_request'][1]}Mi")
        print(f"   source: {k['source']}")
        if k.get("note"):
            print(f"   note: {k['note']}")
        if "raw_txn_per_s" in k:
            print(f"   store ceiling, same cluster: {k['raw_txn_per_s']:.0f} one-put txn/s, "
                  f"{k['raw_batched_keys_per_s']:.0f} keys/s in 100-put txns (4 callers)")
        _table(("runner", "schedulers", "claim_batch", "txns_in_flight", "policy", "submit_s", "measured_s",
                "tasks_per_s", "commit_txns", "failed_txn_fraction", "etcd_cpu_s", "bench_process_cpu_s",
                "keys_written_per_pod", "verified"), k["runs"])
        for r in k["runs"]:
            if r["keys_written_per_pod_by_kind"]:
                print(f"   keys written per pod ({r['runner']}): " + ", ".join(
                    f"{kind} {v}" for kind, v in r["keys_written_per_pod_by_kind"].items()))
            if r["store_txns"]:
                print(f"   store txns ({r['runner']}): " + ", ".join(f"{a} {b}" for a, b in r["store_txns"].items()))
        print(f"   k8s_basic_pods_per_s = {k['k8s_basic_pods_per_s']:.0f} ({k['best_runner']})   "
              f"upstream minimum {k['upstream_min_pods_per_s']:.0f}   target {k['target_pods_per_s']}")
        for key, runner_key in (("k8s_ray_pods_per_s", ""), ("k8s_ray_over_raw_txn", ""),
                                ("k8s_keys_written_per_pod", "k8s_keys_written_runner"),
                                ("k8s_bytes_written_per_pod", "k8s_bytes_written_runner")):
            if key in k:
                print(f"   {key} = {k[key]}" + (f" ({k[runner_key]} run)" if runner_key else ""))
    if "scaling" in result:
        s = result["scaling"]
        rows = s["rows"]
        print(f"\n== scaling: {s['workload']} ==")
        for line in s["skipped"]:
            print(f"   skipped {line}")
        _pivot("tasks/s", rows, "tasks_per_s", "{:.0f}")
        _pivot("conflict fraction (conflicted claims per successful txn)", rows, "conflict_fraction", "{:.3f}")
        _pivot("failed txn fraction", rows, "failed_txn_fraction", "{:.3f}")
        for f in s.get("scaling_series", []):
            print(f"   {f['backend']}/{f['runner']}/homes {'on' if f['homes'] else 'off'}: 1 scheduler "
                  f"{f['single_tasks_per_s']:.0f} tasks/s; min ratio N>=2 {f['min_ratio']:.3f}; "
                  f"max failed txn fraction N>=2 {f['max_failed_txn_fraction']:.3f} "
                  f"(medians of {max(len(v) for v in f['runs_tasks_per_s_by_n'].values())} run(s) per N; "
                  f"worst run {f['max_failed_txn_fraction_any_run']:.3f})")
        for key in ("scaling_min_ratio", "scaling_max_failed_txn_fraction",
                    "scaling_min_ratio_without_homes", "scaling_max_failed_txn_fraction_without_homes",
                    "scaling_max_failed_txn_fraction_any_run", "scaling_90_cpu_fill", "scaling_90_min_ratio",
                    "scaling_90_max_failed_txn_fraction", "scaling_90_max_failed_txn_fraction_any_run",
                    "scaling_90_jobs_parked"):
            if key in s:
                print(f"   {key} = {s[key]}")
        print()
        _table(("backend", "runner", "homes", "conflict_mode", "schedulers", "repeat", "tasks_per_s",
                "conflict_fraction", "failed_txn_fraction", "recommitted_claims", "jobs_parked", "busyness_mean",
                "scheduler_actors_cpu_s", "etcd_cpu_s", "store_host_cpu_s", "bench_process_cpu_s", "verified"), rows)
        if s.get("scaling_90_rows"):
            print("\n   the cell loaded to 90% CPU:")
            _table(("backend", "runner", "schedulers", "repeat", "tasks_per_s", "failed_txn_fraction", "jobs_parked",
                    "scheduler_actors_cpu_s", "etcd_cpu_s", "store_host_cpu_s", "bench_process_cpu_s", "verified"),
                   s["scaling_90_rows"])


    _print_backlog(result.get("backlog"))
    _print_sync(result.get("sync"))
    _print_whole_cell(result.get("whole_cell"))


def _print_backlog(b: dict | None) -> None:
    if b is None:
        return
    print("\n== backlog: placement rate over the first placements, shallow vs deep queue ==")
    if "skipped" in b:
        print(f"   skipped: {b['skipped']}")
        return
    print(f"   {b['backend']}, {b['schedulers']} scheduler ({b['runner']}), claim_batch {b['claim_batch']}, "
          f"{b['machines']} machines, single-task jobs; {b['note']}")
    _table(("repeat", "queued", "placements", "measured_s", "placements_per_s", "commit_txns", "failed_txns",
            "check_store_ok"), b["rows"])
    print(f"   backlog_ratio = {b['backlog_ratio']} (deep / shallow; target >= 0.8)")


def _print_sync(s: dict | None) -> None:
    if s is None:
        return
    print(f"\n== sync: a scheduler cache of {s['machines']} machines ({s['labels_per_machine']} labels, "
          f"{s['tasks_per_machine']} tasks each) vs the raw read of the same keys ==")
    for line in s["skipped"]:
        print(f"   skipped {line}")
    _table(("backend", "machines", "keys_read", "write_s", "raw_s", "sync_s", "best_raw_s", "best_sync_s",
            "sync_over_raw"), s["rows"])
    print(f"   retained by the copy (tracemalloc, separate pass, memory store): "
          f"{s['sync_100k_retained_bytes_per_machine']} bytes/machine (target <= {s['target_retained_bytes_per_machine']})")
    print(f"   sync over raw target <= {s['target_over_raw']}")


def _print_whole_cell(w: dict | None) -> None:
    if w is None:
        return
    print("\n== whole cell: Google 2011 machines live at the window's start, filled from scratch ==")
    if "rows" not in w:
        print(f"   skipped: {w['skipped']}")
        return
    print(f"   {w['machines']} machines; {w['jobs']} jobs, {w['tasks']} tasks drawn from {w['trace']} "
          f"(CPU requested {w['requested_cpu_fraction']:.1%}, memory {w['requested_memory_fraction']:.1%}); "
          f"{w['schedulers']} schedulers (BATCH preset, homes); clock from the first submission")
    for line in w["skipped"]:
        print(f"   skipped {line}")
    _table(("backend", "runner", "schedulers", "completed", "submit_s", "whole_cell_s", "target_s", "tasks_placed",
            "jobs_placed", "jobs_parked", "failed_txns", "bound_tasks", "check_store_ok", "violations"), w["rows"])


def _column(r: dict) -> str:
    """A pivot column: backend/conflict mode, with the runner and homes when not the defaults."""
    name = f"{r['backend']}/{r['conflict_mode']}"
    if r.get("runner", "threads") != "threads":
        name += f"/{r['runner']}"
    if not r.get("homes_on", True):
        name += "/no-homes"
    return name


def _pivot(title: str, rows: list[dict], metric: str, fmt: str) -> None:
    order = ["memory", "etcd-1", "etcd-3"]
    cols = sorted({(_column(r), r["backend"], r["conflict_mode"]) for r in rows},
                  key=lambda c: (order.index(c[1]), c[2] != "resource_fit", c[0]))
    names = [c[0] for c in cols]
    counts = sorted({r["schedulers"] for r in rows})
    table: dict[tuple[str, int], list] = {}
    for r in rows:  # repeated runs of a point: every value, in run order
        table.setdefault((_column(r), r["schedulers"]), []).append(r[metric])
    print(f"\n   {title}")
    _table(("schedulers", *names), [{"schedulers": n, **{c: " ".join(fmt.format(v) for v in table[(c, n)])
                                                         for c in names if (c, n) in table}}
                                    for n in counts])


def _table(header: Sequence[str], rows: list[dict]) -> None:
    cells = [[str(r.get(h, "")) for h in header] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))
