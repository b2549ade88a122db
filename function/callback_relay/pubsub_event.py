"""The Pub/Sub message inside a CloudEvent, from either production trigger.

- Eventarc (``--trigger-topic``) sends a ``google.cloud.pubsub.topic.v1.messagePublished``
  CloudEvent whose data is ``{"message": {...}, "subscription": ...}``.
  https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/pubsub/v1/data.proto
- A direct Pub/Sub push is converted by functions-framework into the same
  shape, without ``subscription`` (functions_framework/event_conversion.py).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from callback_relay.rejection import Rejection

_SOURCE_PROJECT_RE = re.compile(r"//pubsub\.googleapis\.com/projects/([^/]+)/")


def project_from_source(source: str | None) -> str | None:
    """The project of a ``//pubsub.googleapis.com/projects/P/topics/T`` event source."""
    match = _SOURCE_PROJECT_RE.match(source or "")
    return match.group(1) if match else None


class EventRejected(Rejection):
    """The event can never be relayed; ``replay`` holds what is left of the message."""

    def __init__(self, reason: str, detail: str, replay: dict[str, Any] | None = None) -> None:
        super().__init__(reason, detail)
        self.replay = replay or {}


@dataclasses.dataclass(frozen=True)
class PubSubDelivery:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: str | None = None
    subscription: str | None = None
    source: str | None = None
    traceparent: str | None = None

    @property
    def source_project(self) -> str | None:
        return project_from_source(self.source)

    def replay_record(self) -> dict[str, Any]:
        """What an operator needs to publish this message again."""
        return {
            "data_b64": base64.b64encode(self.data).decode("ascii"),
            "attributes": self.attributes,
            "message_id": self.message_id,
            "publish_time": self.publish_time,
            "subscription": self.subscription,
            "source": self.source,
        }


def delivery_from_event(
    event_id: str | None,
    source: str | None,
    data: Any,
    traceparent: str | None = None,
) -> PubSubDelivery:
    """Extract the Pub/Sub message; raise EventRejected when the event has none."""
    if not isinstance(data, Mapping) or not isinstance(data.get("message"), Mapping):
        raise EventRejected(
            "not_pubsub",
            "event data has no Pub/Sub 'message' object",
            {"event_id": event_id, "source": source, "data": repr(data)[:4096]},
        )
    message = data["message"]
    message_id = message.get("messageId") or message.get("message_id") or event_id or ""
    attributes_raw = message.get("attributes") or {}
    attributes = (
        {str(k): str(v) for k, v in attributes_raw.items()}
        if isinstance(attributes_raw, Mapping)
        else {}
    )
    subscription = data.get("subscription")
    common = {
        "message_id": str(message_id),
        "attributes": attributes,
        "publish_time": message.get("publishTime") or message.get("publish_time"),
        "subscription": subscription if isinstance(subscription, str) else None,
        "source": source,
        "traceparent": traceparent,
    }
    raw = message.get("data")
    if not isinstance(raw, str) or not raw:
        empty = PubSubDelivery(data=b"", **common)
        raise EventRejected(
            "no_data", "Pub/Sub message has no data (attributes only?)", empty.replay_record()
        )
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        replay = {**PubSubDelivery(data=b"", **common).replay_record(), "data_raw": raw[:4096]}
        raise EventRejected(
            "bad_base64", "Pub/Sub message data is not valid base64", replay
        ) from None
    return PubSubDelivery(data=decoded, **common)
