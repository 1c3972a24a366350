"""Trace readers: the Google 2011 cluster trace (``google2011``), where it and the shipped
sample live (``sample``), and its records as the cell's model (``to_model``)."""

from .google2011 import TaskAttempt, TraceJob, TraceMachine, read_machine_events, read_task_attempts
from .sample import default_trace_dir, sample_trace_dir, shared_data_dir, shared_trace_dir
from .to_model import trace_job, trace_machine

__all__ = [
    "TaskAttempt",
    "TraceJob",
    "TraceMachine",
    "default_trace_dir",
    "read_machine_events",
    "read_task_attempts",
    "sample_trace_dir",
    "shared_data_dir",
    "shared_trace_dir",
    "trace_job",
    "trace_machine",
]
