"""What an answer from the Workflows callback endpoint means for the message.

Sources:
- "Workflows HTTP callbacks are fully idempotent by default. It's safe to retry
  a callback if it fails." A 429 "indicates that the first callback was received
  successfully"; a 404 "indicates that a callback is not available" (the
  execution completed or is not running).
  "Making API calls exactly once when using Workflows", Google Cloud blog, 2024-05,
  https://cloud.google.com/blog/products/application-development/using-single-execution-calls-with-workflows
  (it links to https://cloud.google.com/workflows/docs/creating-callback-endpoints#invoke-once).
- Error bodies follow https://cloud.google.com/apis/design/errors:
  {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": ..., "details": [...]}}.
  A quota 429 is RESOURCE_EXHAUSTED too, and the callback 429's body is not
  documented, so only a 429 that says "pending" (and shows no quota evidence) is
  taken as already received; any other 429 is retried, which is always safe.

| answer                                   | kind           | Pub/Sub  |
|------------------------------------------|----------------|----------|
| 2xx                                      | delivered      | ack      |
| 404                                      | execution_gone | ack      |
| 429 "already has a pending request"      | already_pending| ack      |
| 429 quota / rate limit, or unrecognised  | transient      | retry    |
| 401, 403, 408, 5xx                       | transient      | retry    |
| 3xx (redirects are never followed)       | permanent      | ack      |
| any other 4xx                            | permanent      | ack      |
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import enum
import json
import re
from collections.abc import Mapping

# Words Workflows uses for a callback whose one-slot buffer is full. A 429 that
# says none of them is treated as a quota limit: retrying that is always safe.
_PENDING_RE = re.compile(r"pending|already (been )?received|not (yet )?(been )?consumed", re.I)
_QUOTA_RE = re.compile(r"quota|rate.?limit|RATE_LIMIT_EXCEEDED|QuotaFailure", re.I)
MAX_ERROR_EXCERPT = 300


class Kind(enum.Enum):
    DELIVERED = "delivered"
    EXECUTION_GONE = "execution_gone"
    ALREADY_PENDING = "already_pending"
    PERMANENT = "callback_rejected"
    TRANSIENT = "transient"

    @property
    def is_final(self) -> bool:
        return self is not Kind.TRANSIENT


@dataclasses.dataclass(frozen=True)
class Classification:
    kind: Kind
    reason: str
    status: int | None = None
    retry_after_seconds: float | None = None
    error_excerpt: str = ""


def parse_retry_after(value: str | None, now: datetime.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    now = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (when - now).total_seconds())


def _error_summary(body: bytes) -> tuple[str, str]:
    """(status, text) of a Google API error body, tolerant of anything else."""
    text = body[:4096].decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error", {})
    except (ValueError, AttributeError):
        return "", text[:MAX_ERROR_EXCERPT]
    if not isinstance(error, dict):
        return "", text[:MAX_ERROR_EXCERPT]
    status = str(error.get("status", ""))
    message = str(error.get("message", ""))
    details = error.get("details")
    if details:
        message = f"{message} {json.dumps(details)[:1000]}"
    return status, message[:MAX_ERROR_EXCERPT]


def classify_response(status: int, headers: Mapping[str, str], body: bytes) -> Classification:
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if 200 <= status < 300:
        return Classification(Kind.DELIVERED, "callback received", status)
    api_status, excerpt = _error_summary(body)
    if status == 404:
        return Classification(
            Kind.EXECUTION_GONE,
            "callback not found: the execution finished, failed or was cancelled",
            status,
            error_excerpt=excerpt,
        )
    if status == 429:
        if _PENDING_RE.search(excerpt) and not _QUOTA_RE.search(excerpt):
            return Classification(
                Kind.ALREADY_PENDING,
                "the callback already holds an unconsumed request; the resume is queued",
                status,
                error_excerpt=excerpt,
            )
        return Classification(
            Kind.TRANSIENT,
            f"rate limited ({api_status or 'HTTP 429'})",
            status,
            retry_after,
            excerpt,
        )
    if status in (401, 403, 408) or status >= 500:
        reason = {
            401: "token rejected (UNAUTHENTICATED)",
            403: "permission denied: grant workflows.callbacks.send to the function's account",
            408: "request timeout",
        }.get(status, f"server error {status}")
        return Classification(Kind.TRANSIENT, reason, status, retry_after, excerpt)
    if 300 <= status < 400:
        return Classification(
            Kind.PERMANENT, f"unexpected redirect {status}; redirects are never followed", status
        )
    return Classification(
        Kind.PERMANENT,
        f"callback refused the request ({api_status or status})",
        status,
        error_excerpt=excerpt,
    )
