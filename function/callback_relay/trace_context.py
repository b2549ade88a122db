"""Which trace a log line belongs to, as Cloud Run correlates them.

Cloud Run nests a container's log lines under the request log of the request
that wrote them when ``logging.googleapis.com/trace`` names that request's
trace, ``projects/PROJECT/traces/TRACE_ID``. The trace comes from the HTTP
request's headers: the W3C ``traceparent`` (https://www.w3.org/TR/trace-context/)
and Google's older ``X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=FLAGS`` (span id
in decimal).
https://cloud.google.com/run/docs/logging
https://cloud.google.com/run/docs/samples/cloudrun-manual-logging
https://cloud.google.com/logging/docs/structured-logging

The CloudEvent's ``traceparent`` extension is the producer's trace, not the
request's: it is logged as ``producer_trace``, and used for the line's trace
only when the request carried no trace header (for example a local run).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"
PRODUCER_TRACE_KEY = "producer_trace"

# version-trace_id-parent_id-trace_flags, lower-case hex; a later version may add
# fields after the flags, version 00 may not.
_TRACEPARENT_RE = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL
)
# The only trace flag this reads: the others (random, 0x02, in Level 2) are not
# about sampling and must not make a header invalid.
_SAMPLED = 0x01
_CLOUD_TRACE_RE = re.compile(r"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([0-9]+))?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclasses.dataclass(frozen=True)
class TraceId:
    trace_id: str
    span_id: str | None = None
    sampled: bool | None = None


@dataclasses.dataclass(frozen=True)
class TraceContext:
    """The traces one request carries; every field is untrusted text."""

    traceparent: str | None = None
    cloud_trace_context: str | None = None
    event_traceparent: str | None = None

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], event_traceparent: str | None = None
    ) -> TraceContext:
        return cls(
            headers.get("traceparent"),
            headers.get("X-Cloud-Trace-Context"),
            event_traceparent if isinstance(event_traceparent, str) else None,
        )

    def fields(self, project: str | None) -> dict[str, Any]:
        """The log line's trace fields; empty without a project or a valid trace."""
        if not project:
            return {}
        request = parse_traceparent(self.traceparent) or parse_cloud_trace_context(
            self.cloud_trace_context
        )
        producer = parse_traceparent(self.event_traceparent)
        line = request or producer
        if line is None:
            return {}
        fields: dict[str, Any] = {TRACE_KEY: f"projects/{project}/traces/{line.trace_id}"}
        if line.span_id is not None:
            fields[SPAN_KEY] = line.span_id
        if line.sampled is not None:
            fields[SAMPLED_KEY] = line.sampled
        if request is not None and producer is not None:
            fields[PRODUCER_TRACE_KEY] = f"projects/{project}/traces/{producer.trace_id}"
        return fields


def parse_traceparent(value: str | None) -> TraceId | None:
    """A W3C traceparent's trace, span and sampled flag; None unless well formed.

    https://www.w3.org/TR/trace-context/#traceparent-header: version ff is
    invalid, an all-zero trace or parent id is invalid, version 00 has nothing
    after the flags, and only the least significant flag bit means "sampled".
    """
    if not value or len(value) > 256:
        return None
    match = _TRACEPARENT_RE.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceId(trace_id, span_id, bool(int(flags, 16) & _SAMPLED))


def parse_cloud_trace_context(value: str | None) -> TraceId | None:
    """``TRACE_ID/SPAN_ID;o=FLAGS``; the decimal span id becomes 16 hex digits."""
    if not value or len(value) > 256:
        return None
    match = _CLOUD_TRACE_RE.fullmatch(value.strip())
    if match is None or match.group(1) == _ZERO_TRACE:
        return None
    trace_id, span, options = match.groups()
    span_id = None
    if span is not None and 0 < int(span) < 2**64:
        span_id = f"{int(span):016x}"
    sampled = None if options is None else bool(int(options) & 1)
    return TraceId(trace_id.lower(), span_id, sampled)
