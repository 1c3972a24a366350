"""Hypothesis strategies: small random cells and task groups."""

from __future__ import annotations

from hypothesis import strategies as st

from cellsched.gpu import GroupSpec

ZONES = ["a", "b"]
MODELS = ["A100", "H100"]


@st.composite
def cells(draw, max_machines: int = 12):
    """(capacity rows, used rows, labels, schedulable) with used <= capacity."""
    n = draw(st.integers(1, max_machines))
    cap, used, labels, sched = [], [], [], []
    for _ in range(n):
        c = (draw(st.sampled_from([0, 1000, 4000, 16000, 64000])), draw(st.sampled_from([0, 2048, 16384, 1 << 20])),
             draw(st.sampled_from([0, 0, 1, 4, 8])))
        u = tuple(draw(st.integers(0, x)) for x in c)
        lb = {}
        if draw(st.booleans()):
            lb["zone"] = draw(st.sampled_from(ZONES))
        if c[2] and draw(st.booleans()):
            lb["gpu.model"] = draw(st.sampled_from(MODELS))
        cap.append(c)
        used.append(u)
        labels.append(lb)
        sched.append(draw(st.booleans()) or draw(st.booleans()))
    return cap, used, labels, sched


@st.composite
def groups(draw, n_machines: int, max_groups: int = 4, max_count: int = 6):
    out = []
    n_groups = draw(st.integers(1, max_groups))
    for _ in range(n_groups):
        req = (draw(st.sampled_from([0, 1, 500, 1000, 4000])), draw(st.sampled_from([0, 1, 1024, 4096])),
               draw(st.sampled_from([0, 0, 1, 2])))
        if not any(req):
            req = (1, 0, 0)
        out.append(
            GroupSpec(
                request=req,
                count=draw(st.integers(0, max_count)),
                labels={"zone": draw(st.sampled_from(ZONES))} if draw(st.integers(0, 3)) == 0 else {},
                gpu_models=frozenset(draw(st.sets(st.sampled_from(MODELS), max_size=1))) if req[2] else frozenset(),
                different_machines=draw(st.booleans()),
                avoid_machines=frozenset(draw(st.sets(st.integers(0, n_machines - 1), max_size=2))),
                anti_affinity=frozenset(draw(st.sets(st.integers(0, n_groups - 1), max_size=1))),
            )
        )
    return out
