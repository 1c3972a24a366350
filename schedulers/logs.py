"""Structured logs: one JSON object per line, ready for Logstash or Loki (docs/architecture.md,
"Observability").

    {"ts": "2026-12-02T07:30:00.123456Z", "level": "INFO", "logger": "cellsched.ray",
     "msg": "...", "pid": 123, "thread": "b0-loop", "trace_id": "...", "span_id": "..."}

trace_id/span_id are the current span's (a scheduler's score span while it decides, a commit
txn's while it commits: schedulers/decision_trace.py), absent outside any span.
Fields passed with `extra=` are kept. Nothing secret leaves: Authorization headers, bearer
tokens and values of keys named like token, secret, password or api key are replaced by
[REDACTED] in the message, the exception text and every extra field, however they are nested.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import IO

from cellsched.cellstate.errors import InvalidInputError

from . import tracing

LEVEL_VAR = "CELLSCHED_LOG_LEVEL"
REDACTED = "[REDACTED]"
_SECRET_NAME = re.compile(r"(?i)(authorization|token|secret|password|passwd|api[_-]?key|cookie)")
_SECRET_TEXT = [
    # "Authorization: Bearer abc", "authorization=Basic xyz": the scheme and its credentials
    (re.compile(r"(?i)\b(authorization|proxy-authorization)(['\"]?\s*[:=]\s*['\"]?)((?:bearer|basic|token)\s+)?[^\s'\",;]+"),
     r"\1\2\3" + REDACTED),
    (re.compile(r"(?i)\bbearer\s+(?:bearer\s+)*[A-Za-z0-9._~+/=-]+"), "Bearer " + REDACTED),
    # token=..., "password": "...", api_key: ...
    (re.compile(r"(?i)\b([\w-]*(?:token|secret|password|passwd|api[_-]?key)[\w-]*)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&]+"),
     r"\1\2" + REDACTED),
]
# What every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    for pattern, repl in _SECRET_TEXT:
        text = pattern.sub(repl, text)
    return text


def _redact_value(name: str, value):
    if _SECRET_NAME.search(name):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(name, v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(repr(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {"ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
               "level": record.levelname, "logger": record.name, "msg": redact(record.getMessage()),
               "pid": record.process, "thread": record.threadName}
        ids = tracing.current_ids()
        if ids is not None:
            obj["trace_id"], obj["span_id"] = ids
        if record.exc_info:
            obj["exc"] = redact(self.formatException(record.exc_info))
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in obj:
                obj[name] = _redact_value(name, value)
        return json.dumps(obj, separators=(",", ":"), default=str)


def configure(stream: IO[str] | None = None, level: str | None = None) -> logging.Handler:
    """JSON lines on `stream` (stderr) for the `cellsched` loggers, at CELLSCHED_LOG_LEVEL (INFO).
    Idempotent: a second call replaces the handler the first installed. The records stop at the
    `cellsched` logger, so only this formatter (which redacts) writes them."""
    name = (level or os.environ.get(LEVEL_VAR) or "INFO").upper()
    if name not in logging.getLevelNamesMapping():
        raise InvalidInputError(f"{LEVEL_VAR}={name!r}: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    logger = logging.getLogger("cellsched")
    for h in list(logger.handlers):
        if isinstance(h.formatter, JsonFormatter):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(name)
    logger.propagate = False  # a root handler (Ray's, a framework's) would print the unredacted record
    return handler
