"""Turn Google 2011 trace records into the cell's model: machines and jobs."""

from __future__ import annotations

from cellsched.cellstate.model import Job, JobClass, Machine, TaskGroup

from .google2011 import TraceJob, TraceMachine


def trace_machine(m: TraceMachine) -> Machine:
    return Machine(f"g{m.id}", (m.cpu, m.memory, 0), {"platform": m.platform[:63]} if m.platform else {})


def trace_job(tj: TraceJob) -> Job | None:
    """One submission wave as a Job, one task group per shape.

    The trace has SUBMITs that request neither CPU nor memory (35 in the two parts);
    a task must request something, so such groups are dropped, and a job left with no
    group is None. Priority and class map one to one; service iff the Omega split says so.
    """
    groups = []
    for k, g in enumerate(tj.groups()):
        if g.cpu == 0 and g.memory == 0:
            continue
        runtimes = [a.runtime_s for a in g.attempts if a.runtime_s is not None]
        duration = sorted(runtimes)[len(runtimes) // 2] if runtimes else None
        groups.append(TaskGroup(f"s{k}", g.count, (g.cpu, g.memory, 0), different_machines=g.different_machines,
                                duration_s=duration))
    if not groups:
        return None
    return Job(tj.name, tuple(groups), JobClass.SERVICE if tj.is_service else JobClass.BATCH, tj.priority)
