"""Pydantic models of the /ui dashboard's read-only data routes (api/routes_ui.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .models_cell import QueueLengths

Scalar = bool | int | float | str


class Heatmap(BaseModel):
    revision: int = Field(description="the store revision read at: send it back as `since` on the next refresh")
    total: int = Field(description="machines in the cell now; fewer than the reader holds means some were "
                                   "removed: ask again with since=0")
    full: bool = Field(description="every machine is listed (since was 0, or ahead of the store)")
    ids: list[str] = Field(description="machines whose spec or allocation changed since `since` (all when full), "
                                       "in id order")
    heat: list[int] = Field(description="per id: its fullest resource in percent (0-100), -1 draining, -2 down")
    dense: str | None = Field(default=None, description="instead of ids and heat when that is smaller: every machine's "
                                                "heat as one byte (0-100, 101 draining, 102 down), base64, in the "
                                                "id order of the full frame whose digest is `digest`")
    digest: str | None = Field(default=None, description="names the id order (full and dense frames): a dense frame "
                                                 "with another digest than the reader's full frame means ask "
                                                 "again with since=0")


class SeriesPoint(BaseModel):
    t: float = Field(description="the scheduler clock's time at the end of the period")
    busyness: float
    conflict_fraction: float


class DecisionSummary(BaseModel):
    seq: int
    start: float = Field(description="unix seconds")
    dur_ms: float
    jobs: int
    placed: int
    parked: int
    conflicts: int


class SchedulerActivity(BaseModel):
    name: str
    job_class: str
    published_at: float
    busyness: float = Field(description="over the scheduler's lifetime (the series is per period)")
    conflict_fraction: float
    tasks_placed: int
    jobs_parked: int
    series: list[SeriesPoint]
    decisions: list[DecisionSummary] = Field(description="the decision ring, oldest first")


class Activity(BaseModel):
    cell: str
    revision: int = Field(description="send it back as `since` on the next refresh")
    alive: list[str] = Field(description="every scheduler with a published key (a live lease)")
    changed: list[SchedulerActivity] = Field(description="schedulers that published since `since` (all when 0)")
    queues: dict[str, QueueLengths]
    parked_jobs: list[str] = Field(description="the first parked jobs, highest priority first, at most 20")


class TraceSpan(BaseModel):
    name: str
    start_ms: float = Field(description="from the attempt's start")
    end_ms: float
    attrs: dict[str, Scalar]


class TraceEvent(BaseModel):
    name: str
    at_ms: float
    attrs: dict[str, Scalar]


class DecisionTrace(BaseModel):
    seq: int
    start: float
    dur_ms: float
    jobs: int
    job_ids: list[str]
    spans: list[TraceSpan]
    events: list[TraceEvent]
    dropped_spans: int
    dropped_events: int
    totals: dict[str, Scalar]


class DecisionTraces(BaseModel):
    scheduler: str
    decisions: list[DecisionTrace]
