"""The HTTP entry point's rules, kept free of Flask so they test without it.

``relay_http`` serves direct callers, as the original Cloud Run service did:
``?callback_url=URL`` (payload ``{}``) or the JSON message as the body. It
hands the raw data to the relay and maps the outcome to a status:

| outcome                          | status |
|----------------------------------|--------|
| delivered, already_pending       | 200    |
| message_rejected: not JSON       | 400    |
| message_rejected: too large      | 413    |
| message_rejected: other, expired | 422    |
| failed_fast                      | 422    |
| url_refused                      | 403    |
| execution_gone, callback_rejected| 502    |
| redelivery_requested, internal_error | 503 with Retry-After |
| wait_registered (keyed)          | 202    |
| event_received, duplicate (keyed)| 200    |
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from callback_relay.errors import RedeliveryRequested
from callback_relay.outcomes import Outcome, Reason
from callback_relay.pubsub_event import PubSubDelivery
from callback_relay.relay import CallbackRelay, RelayOutcome
from callback_relay.trace_context import TraceContext

RETRY_AFTER_SECONDS = 10
_STATUS_BY_OUTCOME: dict[Outcome, int] = {
    Outcome.DELIVERED: 200,
    Outcome.ALREADY_PENDING: 200,
    Outcome.MESSAGE_REJECTED: 422,
    Outcome.FAILED_FAST: 422,
    Outcome.EXPIRED: 422,
    Outcome.URL_REFUSED: 403,
    Outcome.EXECUTION_GONE: 502,
    Outcome.CALLBACK_REJECTED: 502,
    Outcome.REDELIVERY_REQUESTED: 503,
    Outcome.INTERNAL_ERROR: 503,
    # Keyed waits (docs/events.md).
    Outcome.WAIT_REGISTERED: 202,
    Outcome.EVENT_RECEIVED: 200,
    Outcome.DUPLICATE: 200,
}


def status_for(outcome: RelayOutcome) -> int:
    if outcome.outcome is Outcome.MESSAGE_REJECTED and outcome.code is not None:
        if outcome.code is Reason.TOO_LARGE:
            return 413
        if outcome.code.is_syntax:
            return 400
    return _STATUS_BY_OUTCOME[outcome.outcome]


def handle_http(
    relay: CallbackRelay,
    query: Mapping[str, str],
    body: bytes,
    headers: Mapping[str, str],
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Return (status, JSON body, extra headers) for one HTTP request."""
    key = headers.get("Idempotency-Key") or str(uuid.uuid4())
    url = query.get("callback_url")
    data = url.encode("utf-8", "surrogatepass") if url is not None else body
    delivery = PubSubDelivery(message_id=key, data=data, attributes={}, source="relay_http")
    try:
        outcome = relay.relay_delivery(delivery, TraceContext.from_headers(headers))
    except RedeliveryRequested as exc:
        retry = {"outcome": "retry_later", "cause": exc.outcome.value, "reason": str(exc)}
        return 503, retry, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    reply: dict[str, Any] = {"outcome": outcome.outcome, "reason": outcome.reason}
    if outcome.http_status is not None:
        reply["callback_status"] = outcome.http_status
        reply["attempts"] = outcome.attempts
    return status_for(outcome), reply, {}
