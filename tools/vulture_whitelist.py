"""Names vulture (`make lint`, --min-confidence 60) cannot see used. Each is used, by a
mechanism static analysis does not follow; anything really unused is deleted instead."""

# ruff: noqa
# mypy: ignore-errors
_ = object()

# Protocols and generated code: called or read by Python, protobuf or pytest.
tb  # __exit__(self, et, ev, tb) in cellstate/codec.py: the context manager protocol
_.range_end  # etcd's RangeRequest protobuf field, set in cellstate/store/etcd.py, read by gRPC
pytestmark  # tests/gpu/test_gpu_paths.py: read by pytest

# Enum members reached by value (Backend("auto"), the trace's event codes).
AUTO  # gpu/backend.py
ADD  # loadtests/traces/records.py: machine_events codes
UPDATE_PENDING  # loadtests/traces/records.py: task_events codes
UPDATE_RUNNING

# loadtests/stress/chaos.py: actions dispatched by name (getattr(self, f"_{action}")), and
# ChaosStats counters reported through dataclasses.asdict.
_._lose
_._monitor
_._purge
released_tasks
failed_tasks
drains
downs
ups
purged_jobs

# Public API with no caller in the repository yet.
_.from_obj  # cellstate/validation.py: Refusal.from_obj, the inverse of to_obj, for readers of a stored refusal
_.plans  # tests/harness.py: the recording planner's query of its submissions, for tests

# schedulers/tracing.py: JsonLinesSpanExporter.export, called by OpenTelemetry's span processors.
_.export
# schedulers/light_spans.py: LightSpan.add_link, OpenTelemetry's Span interface, called by its users.
_.add_link
# loadtests/otlp_receiver.py: http.server calls its handler's do_POST and log_message by name.
_.do_POST
_.log_message
# api/: route functions are registered by FastAPI's decorators and called per request;
# Pydantic reads model fields, model_config and validators when it validates and serializes.
cell_summary
healthz
readyz
submit_job
submit_jobs_bulk
list_jobs
get_job
cancel
explain_job
list_machines
get_machine
undrain
machine_heartbeat
report_task
model_config
_._one_gpu_spelling
_._groups_are_consistent
next_cursor
renewed
draining
in_process
holding_claims
human
unplaceable_groups
not_recorded
_._names_a_resource
plan_job
scorers
verify_audit
_._above_zero
# api/routes_ui.py and api/models_ui.py: the /ui dashboard's routes, and fields its page reads.
dashboard_page
dashboard_script
cell_heatmap
ui_activity
ui_decisions
busyness
dur_ms
published_at
start_ms
end_ms
at_ms
dropped_spans
dropped_events
# loadtests/locust_api.py: Locust finds the user class and reads its wait_time itself.
ApiUser
wait_time
# cellsched/demo_api.py: uvicorn.Server reads should_exit on its own loop to stop.
should_exit
