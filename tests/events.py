"""Builders for the three shapes a Pub/Sub message reaches the function in."""

from __future__ import annotations

import base64
import json
from typing import Any

PROJECT = "test-project"
TOPIC = "workflows-callback-relay"
SOURCE = f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{TOPIC}"
EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


def pubsub_message(
    data: bytes | None, message_id: str = "1001", attributes: dict[str, str] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "messageId": message_id,
        "publishTime": "2026-11-28T12:00:00.123Z",
        "attributes": attributes or {},
    }
    if data is not None:
        message["data"] = base64.b64encode(data).decode()
    return message


def message_data(callback_url: str, **fields: Any) -> bytes:
    return json.dumps({"callback_url": callback_url, **fields}).encode()


def eventarc_binary(
    data: bytes | None, message_id: str = "1001", traceparent: str | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    """(headers, body) of the binary CloudEvent an Eventarc Pub/Sub trigger sends."""
    headers = {
        "ce-id": message_id,
        "ce-source": SOURCE,
        "ce-type": EVENT_TYPE,
        "ce-specversion": "1.0",
        "ce-time": "2026-11-28T12:00:00.123Z",
        "Content-Type": "application/json",
    }
    if traceparent:
        headers["ce-traceparent"] = traceparent
    body = {
        "message": pubsub_message(data, message_id),
        "subscription": f"projects/{PROJECT}/subscriptions/eventarc-us-central1-relay-sub-001",
    }
    return headers, body


def structured(data: bytes | None, message_id: str = "1001") -> dict[str, Any]:
    """A structured-mode CloudEvent (application/cloudevents+json) body."""
    _headers, body = eventarc_binary(data, message_id)
    return {
        "specversion": "1.0",
        "id": message_id,
        "source": SOURCE,
        "type": EVENT_TYPE,
        "datacontenttype": "application/json",
        "data": body,
    }


def raw_push(data: bytes | None, message_id: str = "1001") -> dict[str, Any]:
    """The body Pub/Sub push sends, which functions-framework converts."""
    return {
        "message": pubsub_message(data, message_id),
        "subscription": f"projects/{PROJECT}/subscriptions/relay-push",
    }


PUSH_PATH = f"/projects/{PROJECT}/topics/{TOPIC}"
