"""The HTTP entry point's rules, kept free of Flask so they test without it.

``relay_http`` serves direct callers, as the original Cloud Run service did:
``?callback_url=URL`` (payload ``{}``) or the JSON message as the body.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from callback_relay import structured_log
from callback_relay.message import MessageRejected, parse_message_data
from callback_relay.relay import CallbackRelay, LogContext, RedeliveryRequested

# Bad input that is not JSON at all is a 400; JSON that breaks the contract is a 422.
_SYNTAX_REASONS = frozenset({"invalid_json", "not_utf8", "empty", "not_an_object"})
_STATUS_BY_OUTCOME = {
    "delivered": 200,
    "already_pending": 200,
    "url_refused": 403,
    "expired": 422,
    "execution_gone": 502,
    "callback_rejected": 502,
}


def handle_http(
    relay: CallbackRelay,
    query: Mapping[str, str],
    body: bytes,
    headers: Mapping[str, str],
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Return (status, JSON body, extra headers) for one HTTP request."""
    key = headers.get("Idempotency-Key") or str(uuid.uuid4())
    data = query["callback_url"].encode() if "callback_url" in query else body
    context = LogContext(
        key,
        structured_log.trace_fields(headers.get("traceparent"), relay.settings.trace_project),
        lambda: {"http_body": data.decode("utf-8", "replace")[:4096], "query": dict(query)},
    )
    try:
        message = parse_message_data(data, relay.settings.max_message_bytes)
    except MessageRejected as exc:
        outcome = relay.reject(exc.reason, exc.detail, context)
        status = 413 if exc.reason == "too_large" else 400 if exc.reason in _SYNTAX_REASONS else 422
        return status, {"outcome": outcome.outcome, "reason": outcome.reason}, {}
    try:
        outcome = relay.relay_message(message, key, context)
    except RedeliveryRequested as exc:
        return 503, {"outcome": "retry_later", "reason": str(exc)}, {"Retry-After": "10"}
    reply: dict[str, Any] = {"outcome": outcome.outcome, "reason": outcome.reason}
    if outcome.http_status is not None:
        reply["callback_status"] = outcome.http_status
        reply["attempts"] = outcome.attempts
    return _STATUS_BY_OUTCOME.get(outcome.outcome, 500), reply, {}
