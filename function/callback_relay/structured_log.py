"""One JSON line per log record, in Cloud Logging's structured format.

Cloud Run functions turn each stdout line that is a JSON object into a log
entry: ``severity`` and ``message`` become the entry's own fields and
``logging.googleapis.com/trace`` links it to the request's trace.
https://cloud.google.com/logging/docs/structured-logging
"""

from __future__ import annotations

import json
import re
import sys
import threading
from typing import Any

TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"
_TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # the logging module's numbers
LEVELS = {"DEBUG": DEBUG, "INFO": INFO, "WARNING": WARNING, "ERROR": ERROR}
SEVERITIES = {number: name for name, number in LEVELS.items()}


class StructuredLog:
    """Writes one JSON line per entry to the current ``sys.stdout``, flushed.

    The relay logs one line per message, so this skips the logging module's
    record, caller lookup and handler chain, which cost as much again as the
    line itself (``python -m bench.steps``). Flushing keeps a line from waiting in
    a buffer while the instance is throttled between requests.
    """

    def __init__(self, level: str = "INFO") -> None:
        self.level = LEVELS[level]
        self._lock = threading.Lock()

    def enabled(self, level: int) -> bool:
        return level >= self.level

    def write(self, level: int, message: str, fields: dict[str, Any]) -> None:
        if level < self.level:
            return
        entry = {"severity": SEVERITIES.get(level, "DEFAULT"), "message": message, **fields}
        line = json.dumps(entry, default=str, ensure_ascii=False) + "\n"
        try:
            with self._lock:  # one whole line at a time from every thread
                sys.stdout.write(line)
                sys.stdout.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stdout must never take down a request


def trace_fields(traceparent: str | None, project: str | None) -> dict[str, Any]:
    """Cloud Logging trace fields from a W3C traceparent, when there is one."""
    if not traceparent or not project:
        return {}
    match = _TRACEPARENT_RE.fullmatch(traceparent.strip())
    if match is None:
        return {}
    trace_id, span_id, flags = match.groups()
    return {
        TRACE_KEY: f"projects/{project}/traces/{trace_id}",
        SPAN_KEY: span_id,
        SAMPLED_KEY: bool(int(flags, 16) & 1),
    }
