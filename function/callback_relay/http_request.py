"""The HTTP entry point's rules, kept free of Flask so they test without it.

``relay_http`` serves direct callers, as the original Cloud Run service did,
with POST only: ``POST /?callback_url=URL`` with no body (payload ``{}``), or
``POST /`` with the JSON message as the body. Any other method is 405 and
calls nothing: GET, HEAD, OPTIONS and DELETE are requests that proxies, link
checkers and browsers send on their own, and none of them may resume a
workflow. A request that gives the message twice (``?callback_url=`` and a
body, or ``callback_url`` twice in the query) is 400 and calls nothing,
instead of one silently winning over the other.

The body is read up to ``MAX_MESSAGE_BYTES`` and no further: a larger one,
announced by Content-Length or found while reading a chunked body, is 413 at
once, and the rest is never read into memory.

| outcome                          | status |
|----------------------------------|--------|
| delivered, already_pending       | 200    |
| message_rejected: not JSON, or the message given twice | 400 |
| message_rejected: method other than POST | 405 (``Allow: POST``) |
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

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from callback_relay.errors import MessageRejected, RedeliveryRequested
from callback_relay.outcome_log import RelayOutcome
from callback_relay.outcomes import Outcome, Reason
from callback_relay.pubsub_event import PubSubDelivery, clip
from callback_relay.relay import CallbackRelay
from callback_relay.response_body import read_capped
from callback_relay.trace_context import TraceContext

RETRY_AFTER_SECONDS = 10
ALLOWED_METHODS = ("POST",)
SOURCE = "relay_http"
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
_STATUS_BY_REASON: dict[Reason, int] = {
    Reason.TOO_LARGE: 413,
    Reason.METHOD_NOT_ALLOWED: 405,
    Reason.AMBIGUOUS_REQUEST: 400,
}
_WHITESPACE = b" \t\r\n"


class Body(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class HttpReply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    # The request body was not read to its end: the server must not read it either.
    body_unread: bool = False


def status_for(outcome: RelayOutcome) -> int:
    if outcome.outcome is Outcome.MESSAGE_REJECTED and outcome.code is not None:
        if outcome.code in _STATUS_BY_REASON:
            return _STATUS_BY_REASON[outcome.code]
        if outcome.code.is_syntax:
            return 400
    return _STATUS_BY_OUTCOME[outcome.outcome]


def _reply(outcome: RelayOutcome, body_unread: bool = False) -> HttpReply:
    reply: dict[str, Any] = {"outcome": outcome.outcome, "reason": outcome.reason}
    if outcome.http_status is not None:
        reply["callback_status"] = outcome.http_status
        reply["attempts"] = outcome.attempts
    headers = (
        {"Allow": ", ".join(ALLOWED_METHODS)} if outcome.code is Reason.METHOD_NOT_ALLOWED else {}
    )
    return HttpReply(status_for(outcome), reply, headers, body_unread)


def handle_http(
    relay: CallbackRelay,
    method: str,
    query_callback_urls: Sequence[str],
    body: Body,
    content_length: int | None,
    headers: Mapping[str, str],
) -> HttpReply:
    """Answer one HTTP request; ``body`` is read at most up to the message size limit."""
    key = headers.get("Idempotency-Key") or str(uuid.uuid4())
    trace = TraceContext.from_headers(headers)
    request = {
        "message_id": clip(key, 512),
        "source": SOURCE,
        "method": clip(method, 64),
        "query_callback_urls": [clip(url, 2048) for url in query_callback_urls[:4]],
        "content_length": content_length,
    }

    def refuse(reason: Reason, detail: str, body_unread: bool = True) -> HttpReply:
        rejection = MessageRejected(reason, detail)
        outcome = relay.reject_request(key, rejection, trace, {"truncated": True, **request})
        return _reply(outcome, body_unread)

    if method not in ALLOWED_METHODS:
        return refuse(
            Reason.METHOD_NOT_ALLOWED, f"{ascii(method)[:40]} cannot resume a workflow; use POST"
        )
    if len(query_callback_urls) > 1:
        return refuse(Reason.AMBIGUOUS_REQUEST, "callback_url is given more than once in the query")
    limit = relay.settings.max_message_bytes
    if content_length is not None and content_length > limit:
        return refuse(Reason.TOO_LARGE, f"the body is {content_length} bytes; the limit is {limit}")
    data, whole = read_capped(body.read, limit)
    if not whole:
        return refuse(
            Reason.TOO_LARGE, f"the body is more than {limit} bytes; the limit is {limit}"
        )
    if query_callback_urls:
        if data.strip(_WHITESPACE):
            return refuse(
                Reason.AMBIGUOUS_REQUEST,
                "the message is given both as ?callback_url= and as the body; give one",
                body_unread=False,
            )
        data = query_callback_urls[0].encode("utf-8", "surrogatepass")
    delivery = PubSubDelivery(message_id=key, data=data, attributes={}, source=SOURCE)
    try:
        outcome = relay.relay_delivery(delivery, trace)
    except RedeliveryRequested as exc:
        return redelivery_reply(exc)
    return _reply(outcome)


def redelivery_reply(exc: RedeliveryRequested) -> HttpReply:
    """503 with Retry-After: the caller (or Pub/Sub) should try again later."""
    retry = {"outcome": "retry_later", "cause": exc.outcome.value, "reason": str(exc)}
    return HttpReply(503, retry, {"Retry-After": str(RETRY_AFTER_SECONDS)})
