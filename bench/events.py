"""The benchmark's messages, as raw HTTP/1.1 requests for the load generator.

The CloudEvent itself is built by harness.cloudevents, like every other one.
"""

from __future__ import annotations

import datetime
from typing import Any

from harness import cloudevents

PROJECT = "bench-project"
TOPIC = f"projects/{PROJECT}/topics/workflows-callback-relay"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/eventarc-bench"


def message_data(callback_url: str, index: int) -> bytes:
    """The message a workflow publishes: its callback URL and a small payload."""
    payload: dict[str, Any] = {"status": "approved", "order": index, "note": "resume"}
    return cloudevents.message_data(callback_url, payload=payload)


def binary_event(message_id: str, data: bytes, host: str) -> bytes:
    """One complete keep-alive HTTP/1.1 request carrying a binary CloudEvent."""
    headers, body = cloudevents.binary_cloudevent(
        message_id,
        data,
        {"origin": "bench"},
        datetime.datetime.now(datetime.UTC),
        SUBSCRIPTION,
        TOPIC,
    )
    return cloudevents.http_request(headers, body, host)
