"""One JSON line per log record, in Cloud Logging's structured format.

Cloud Run functions turn each stdout line that is a JSON object into a log
entry: ``severity`` and ``message`` become the entry's own fields and
``logging.googleapis.com/trace`` links it to the request's trace.
https://cloud.google.com/logging/docs/structured-logging
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

LOGGER_NAME = "callback_relay"
TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"
_TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class CloudLoggingFormatter(logging.Formatter):
    """Formats ``logger.info(msg, extra={"fields": {...}})`` as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class StdoutHandler(logging.Handler):
    """Writes each record as one line to the current ``sys.stdout``, flushed.

    Cloud Run reads stdout line by line; flushing keeps a line from waiting in
    a buffer when the instance is throttled between requests.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            sys.stdout.write(line)
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging must never take down a request
            self.handleError(record)


def configure(level: str) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, StdoutHandler) for h in logger.handlers):
        handler = StdoutHandler()
        handler.setFormatter(CloudLoggingFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


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
