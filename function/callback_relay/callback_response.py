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
  The decision reads the structured fields first (``status``, the
  google.rpc.ErrorInfo ``reason``, a QuotaFailure detail) and the message text
  last, and never the text of a body cut at the read cap.
- Retry-After is delay-seconds (ASCII digits) or an HTTP-date,
  https://www.rfc-editor.org/rfc/rfc9110#name-retry-after; anything else is ignored.

| answer                                   | kind           | Pub/Sub  |
|------------------------------------------|----------------|----------|
| 2xx                                      | delivered      | ack      |
| 404                                      | execution_gone | ack      |
| 429 "already has a pending request"      | already_pending| ack      |
| 429 quota / rate limit, or unrecognised  | transient      | retry    |
| 429 whose body was cut or is not JSON    | transient      | retry    |
| 401, 403, 408, 5xx, 1xx, over 599        | transient      | retry    |
| 3xx (redirects are never followed)       | permanent      | ack      |
| any other 4xx                            | permanent      | ack      |
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import enum
import re
from collections.abc import Mapping

from callback_relay.google_api_error import ErrorBody, parse_error_body

# Words Workflows uses for a callback whose one-slot buffer is full. A 429 that
# says none of them is treated as a quota limit: retrying that is always safe.
_PENDING_RE = re.compile(r"pending|already (been )?received|not (yet )?(been )?consumed", re.I)
_QUOTA_RE = re.compile(r"quota|rate.?limit|RATE_LIMIT_EXCEEDED|QuotaFailure", re.I)
_DELAY_SECONDS_RE = re.compile(r"[0-9]+", re.ASCII)
# Longer waits than this mean "not within this delivery" all the same.
MAX_RETRY_AFTER_SECONDS = 86400.0
_MAX_HTTP_DATE_CHARS = 64


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


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    """The final classification of one delivery, after its attempts."""

    classification: Classification
    attempts: int
    latency_ms: float


def parse_retry_after(value: str | None, now: datetime.datetime | None = None) -> float | None:
    """Seconds to wait, in [0, MAX_RETRY_AFTER_SECONDS], or None for anything unreadable."""
    if not value:
        return None
    value = value.strip(" \t")
    if _DELAY_SECONDS_RE.fullmatch(value):
        # int() of thousands of digits raises; a number this long is "too long" anyway.
        return (
            MAX_RETRY_AFTER_SECONDS
            if len(value) > 9
            else min(float(value), MAX_RETRY_AFTER_SECONDS)
        )
    if len(value) > _MAX_HTTP_DATE_CHARS or not value.isascii():
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = (when - (now or datetime.datetime.now(datetime.UTC))).total_seconds()
    except (TypeError, ValueError, OverflowError, IndexError):
        # Python 3.11 raises TypeError for unparsable text, ValueError/OverflowError
        # for impossible dates (year 0, hour 99, offset +9999).
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def _shows_quota(error: ErrorBody) -> bool:
    return any(_QUOTA_RE.search(t) for t in (*error.reasons, *error.detail_types))


def is_already_pending(error: ErrorBody) -> bool:
    """A 429 body that says the callback already holds a request, from structure first."""
    if not error.structured or _shows_quota(error):
        return False  # a cut or foreign body, or a quota limit: retry, always safe
    if error.status and error.status != "RESOURCE_EXHAUSTED":
        return False  # 429 maps to RESOURCE_EXHAUSTED in the error model
    if any(_PENDING_RE.search(r) for r in error.reasons):
        return True
    # Text last, the whole message: quota words anywhere in it win.
    return bool(_PENDING_RE.search(error.message)) and not _QUOTA_RE.search(error.message)


def classify_response(
    status: int, headers: Mapping[str, str], body: bytes, complete: bool = True
) -> Classification:
    """What the answer means; ``complete=False`` when the body was cut at the read cap."""
    if 200 <= status < 300:
        return Classification(Kind.DELIVERED, "callback received", status)
    retry_after = parse_retry_after(headers.get("Retry-After"))
    error = parse_error_body(body, complete)
    excerpt = error.excerpt
    if status == 404:
        return Classification(
            Kind.EXECUTION_GONE,
            "callback not found: the execution finished, failed or was cancelled",
            status,
            error_excerpt=excerpt,
        )
    if status == 429:
        if is_already_pending(error):
            return Classification(
                Kind.ALREADY_PENDING,
                "the callback already holds an unconsumed request; the resume is queued",
                status,
                error_excerpt=excerpt,
            )
        return Classification(
            Kind.TRANSIENT,
            f"rate limited ({error.status[:64] or 'HTTP 429'})",
            status,
            retry_after,
            excerpt,
        )
    if status in (401, 403, 408) or status >= 500 or status < 200:
        reason = {
            401: "token rejected (UNAUTHENTICATED)",
            403: "permission denied: grant workflows.callbacks.send to the function's account",
            408: "request timeout",
        }.get(status, f"server error {status}" if status >= 500 else f"unexpected status {status}")
        return Classification(Kind.TRANSIENT, reason, status, retry_after, excerpt)
    if 300 <= status < 400:
        return Classification(
            Kind.PERMANENT, f"unexpected redirect {status}; redirects are never followed", status
        )
    return Classification(
        Kind.PERMANENT,
        f"callback refused the request ({error.status[:64] or status})",
        status,
        error_excerpt=excerpt,
    )
