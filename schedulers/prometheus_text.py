"""The cell's metrics in Prometheus' text exposition format, built with prometheus-client from
what the schedulers published (schedulers/metrics_publish.py) and what the store holds
(docs/architecture.md, "Observability"). A pure function: the API's /metrics serves its output
with prometheus_client.CONTENT_TYPE_LATEST.

    cellsched_scheduler_up{scheduler}                 1 while its lease (and so its key) lives,
                                                      0 for a known scheduler whose key is gone
    cellsched_scheduler_busyness{scheduler}           fraction of its lifetime deciding and committing
    cellsched_scheduler_conflict_fraction{scheduler}  conflicted claims per successful txn (Omega's)
    cellsched_commits_total{scheduler,mode}           commit txns that succeeded
    cellsched_conflicts_total{scheduler,mode}         claims refused by a conflict
    cellsched_tasks_placed_total{scheduler}
    cellsched_job_wait_seconds{class}                 histogram, submit -> placed, summed over the
                                                      class's live schedulers
    cellsched_queue_length{class}                     pending index entries
    cellsched_cell_capacity{resource}, cellsched_cell_used{resource}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from cellsched.cellstate.errors import InvalidInputError


class _Snapshot(Collector):
    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return iter(self.families)


FIELDS = ("job_class", "mode", "busyness", "conflict_fraction", "commits", "conflicts", "tasks_placed",
          "wait_seconds")


def _check(published: Mapping[str, dict]) -> None:
    for name, m in published.items():
        missing = [f for f in FIELDS if f not in m]
        if missing:
            raise InvalidInputError(f"published metrics of {name}: missing {', '.join(missing)}")


def _bound(le) -> str:
    return "+Inf" if le in ("+Inf", float("inf")) else repr(float(le))


def _merge_waits(published: Mapping[str, dict]) -> dict[str, tuple[dict[str, float], float]]:
    """class -> (cumulative count per bucket bound, sum), over the class's schedulers."""
    out: dict[str, tuple[dict[str, float], float]] = {}
    for name, m in published.items():
        wait = m.get("wait_seconds")
        if not wait:
            continue
        counts, total = out.get(m["job_class"], ({}, 0.0))
        for le, n in wait["buckets"]:
            counts[_bound(le)] = counts.get(_bound(le), 0) + n
        if "+Inf" not in counts:
            raise InvalidInputError(f"published metrics of {name}: wait buckets lack +Inf")
        out[m["job_class"]] = (counts, total + wait["sum"])
    return out


def render(published: Mapping[str, dict], capacity: Mapping[str, int], used: Mapping[str, int],
           queue_lengths: Mapping[str, int], known: Iterable[str] = ()) -> bytes:
    """Prometheus text for the cell. `published`: metrics_publish.read_published; `known`:
    schedulers seen before (those without a key now are reported up 0)."""
    _check(published)
    up = GaugeMetricFamily("cellsched_scheduler_up", "1 while the scheduler's lease holds its metrics key",
                           labels=["scheduler"])
    busy = GaugeMetricFamily("cellsched_scheduler_busyness", "Fraction of the scheduler's lifetime spent busy",
                             labels=["scheduler"])
    conflict = GaugeMetricFamily("cellsched_scheduler_conflict_fraction",
                                 "Conflicted claims per successful commit txn", labels=["scheduler"])
    commits = CounterMetricFamily("cellsched_commits", "Commit txns that succeeded", labels=["scheduler", "mode"])
    conflicts = CounterMetricFamily("cellsched_conflicts", "Claims refused by a conflict",
                                    labels=["scheduler", "mode"])
    placed = CounterMetricFamily("cellsched_tasks_placed", "Tasks the scheduler placed", labels=["scheduler"])
    for name in sorted(set(known) - set(published)):
        up.add_metric([name], 0)
    for name, m in sorted(published.items()):
        up.add_metric([name], 1)
        busy.add_metric([name], m["busyness"])
        conflict.add_metric([name], m["conflict_fraction"])
        commits.add_metric([name, m["mode"]], m["commits"])
        conflicts.add_metric([name, m["mode"]], m["conflicts"])
        placed.add_metric([name], m["tasks_placed"])
    wait = HistogramMetricFamily("cellsched_job_wait_seconds", "Seconds from submission to placed",
                                 labels=["class"])
    for cls, (counts, total) in sorted(_merge_waits(published).items()):
        ordered = sorted(counts.items(), key=lambda kv: float("inf") if kv[0] == "+Inf" else float(kv[0]))
        wait.add_metric([cls], ordered, sum_value=total)
    queue = GaugeMetricFamily("cellsched_queue_length", "Pending jobs in the queue", labels=["class"])
    for cls, n in sorted(queue_lengths.items()):
        queue.add_metric([cls], n)
    cap = GaugeMetricFamily("cellsched_cell_capacity", "The cell's capacity, base units", labels=["resource"])
    use = GaugeMetricFamily("cellsched_cell_used", "Bound requests, base units", labels=["resource"])
    for r, n in capacity.items():
        cap.add_metric([r], n)
    for r, n in used.items():
        use.add_metric([r], n)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot([up, busy, conflict, commits, conflicts, placed, wait, queue, cap, use]))
    return generate_latest(registry)
