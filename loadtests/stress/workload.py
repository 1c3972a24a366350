"""The stress run's cell and jobs, all drawn from one seeded generator.

A few dozen machines, some GPU-labelled; a mix of jobs per class:
- batch: single tasks, incremental jobs of thousands of small tasks, small gangs;
- service: task groups that need different machines, and gangs;
- gpu: all-or-nothing gangs with GPU label constraints (model and accelerator).
Small enough that a full invariant check after every write stays cheap, full enough
(the chaos thread releases only above a high-water mark) that commits really contend.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cellsched.cellstate.model import Job, JobClass, Machine, TaskGroup, TransactionMode

GPU_MODELS = ("A100", "H100")
CPU_MACHINE = (16_000, 65_536, 0)  # 16 CPUs, 64 GiB
GPU_MACHINE = (32_000, 262_144, 8)  # 32 CPUs, 256 GiB, 8 GPUs


def build_fleet(rng: random.Random, cpu_machines: int = 28, gpu_machines: int = 8) -> list[Machine]:
    fleet = [Machine(f"m{i:02d}", CPU_MACHINE, {"zone": rng.choice("abc")}) for i in range(cpu_machines)]
    fleet += [Machine(f"g{i:02d}", GPU_MACHINE, {"accel": "gpu", "gpu.model": GPU_MODELS[i % len(GPU_MODELS)],
                                                 "zone": rng.choice("abc")})
              for i in range(gpu_machines)]
    return fleet


@dataclass
class JobMaker:
    """Seeded job generator; ids are unique per run (`prefix` + a counter)."""

    rng: random.Random
    prefix: str = "s"
    big_tasks: tuple[int, int] = (1_000, 3_000)  # task count range of the incremental "big" jobs
    n: int = 0

    def _id(self, kind: str) -> str:
        self.n += 1
        return f"{self.prefix}-{kind}-{self.n}"

    def _prio(self) -> int:
        return self.rng.randint(0, 11)

    def single(self) -> Job:
        r = self.rng
        req = (r.choice((250, 500, 1000, 2000)), r.choice((512, 1024, 4096)), 0)
        return Job(self._id("one"), (TaskGroup("t", 1, req),), JobClass.BATCH, self._prio())

    def big(self) -> Job:
        """Thousands of small tasks, placed incrementally over many commits and chunks."""
        r = self.rng
        req = (r.choice((50, 100)), r.choice((128, 256)), 0)
        return Job(self._id("big"), (TaskGroup("w", r.randint(*self.big_tasks), req),), JobClass.BATCH,
                   self._prio())

    def batch_gang(self) -> Job:
        r = self.rng
        req = (r.choice((500, 1000, 2000)), 2048, 0)
        return Job(self._id("bgang"), (TaskGroup("g", r.randint(4, 12), req),), JobClass.BATCH, self._prio(),
                   TransactionMode.ALL_OR_NOTHING)

    def spread(self) -> Job:
        """A service whose replicas must sit on different machines, plus a sidecar group."""
        r = self.rng
        groups = [TaskGroup("replica", r.randint(3, 12), (r.choice((1000, 2000, 4000)), 4096, 0),
                            different_machines=True)]
        if r.random() < 0.5:
            groups.append(TaskGroup("cache", r.randint(1, 4), (500, 8192, 0), {"zone": r.choice("abc")}))
        mode = TransactionMode.ALL_OR_NOTHING if r.random() < 0.4 else TransactionMode.INCREMENTAL
        return Job(self._id("svc"), tuple(groups), JobClass.SERVICE, self._prio(), mode)

    def gpu_gang(self) -> Job:
        r = self.rng
        labels = {"accel": "gpu"}
        pick = r.random()
        if pick < 0.4:
            labels["gpu.model"] = r.choice(GPU_MODELS)
        elif pick < 0.6:
            labels["gpu.model"] = ",".join(GPU_MODELS)  # either model
        req = (r.choice((2000, 4000)), r.choice((16_384, 32_768)), r.choice((1, 2, 4)))
        return Job(self._id("gpu"), (TaskGroup("worker", r.randint(2, 8), req, labels),), JobClass.GPU,
                   self._prio(), TransactionMode.ALL_OR_NOTHING)

    def for_class(self, job_class: JobClass) -> Job:
        r = self.rng.random()
        if job_class is JobClass.BATCH:
            return self.single() if r < 0.75 else self.batch_gang()
        if job_class is JobClass.SERVICE:
            return self.spread()
        return self.gpu_gang()
