"""cellsched.schedulers: the scheduler loop (plain Python), its cache and its decisions.

Ray lives only in ``schedulers.ray_actors``, which is not re-exported here: importing the
package never imports Ray.
"""

from .attempts import Attempt, HeldJob, Outcome
from .cache import SchedulerCache
from .core import Scheduler
from .cpu_baton import CpuBaton
from .decide import Decision, decide_job
from .metrics import SchedulerMetrics
from .settings import BATCH, GPU, PRESETS, SERVICE, SchedulerSettings, ThinkTime
from .simulation import Simulation, SimulationResult, build_simulation, synthetic_workload

__all__ = [
    "BATCH",
    "GPU",
    "PRESETS",
    "SERVICE",
    "Attempt",
    "CpuBaton",
    "Decision",
    "HeldJob",
    "Outcome",
    "Scheduler",
    "SchedulerCache",
    "SchedulerMetrics",
    "SchedulerSettings",
    "Simulation",
    "SimulationResult",
    "ThinkTime",
    "build_simulation",
    "decide_job",
    "synthetic_workload",
]
