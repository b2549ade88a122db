"""Eventarc-shaped binary CloudEvents, as raw HTTP/1.1 requests for the load generator.

Eventarc's Pub/Sub trigger POSTs ``ce-*`` headers (type
``google.cloud.pubsub.topic.v1.messagePublished``) and a JSON body
``{"message": {data, attributes, messageId, publishTime}, "subscription"}``.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
PROJECT = "bench-project"
TOPIC = f"projects/{PROJECT}/topics/workflows-callback-relay"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/eventarc-bench"


def message_data(callback_url: str, index: int) -> bytes:
    """The message a workflow publishes: its callback URL and a small payload."""
    payload: dict[str, Any] = {"status": "approved", "order": index, "note": "resume"}
    return json.dumps({"callback_url": callback_url, "payload": payload}).encode()


def binary_event(message_id: str, data: bytes, host: str) -> bytes:
    """One complete keep-alive HTTP/1.1 request carrying a binary CloudEvent."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = json.dumps(
        {
            "message": {
                "data": base64.b64encode(data).decode("ascii"),
                "attributes": {"origin": "bench"},
                "messageId": message_id,
                "publishTime": now,
            },
            "subscription": SUBSCRIPTION,
        }
    ).encode()
    headers = [
        "POST / HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"ce-id: {message_id}",
        "ce-specversion: 1.0",
        f"ce-type: {EVENT_TYPE}",
        f"ce-source: //pubsub.googleapis.com/{TOPIC}",
        f"ce-time: {now}",
        "Connection: keep-alive",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body
