"""The Pub/Sub message inside a CloudEvent, from either production trigger.

- Eventarc (``--trigger-topic``) sends a ``google.cloud.pubsub.topic.v1.messagePublished``
  CloudEvent whose data is ``{"message": {...}, "subscription": ...}``.
  https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/pubsub/v1/data.proto
- A direct Pub/Sub push is converted by functions-framework into the same
  shape, without ``subscription`` and ``deliveryAttempt`` (functions_framework/
  event_conversion.py); main.py puts them back from the push body.
- ``deliveryAttempt`` is set only on a subscription with a dead-letter policy
  (``MessagePublishedData.delivery_attempt``, in the data.proto above).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from callback_relay.errors import EventRejected
from callback_relay.outcomes import Reason

# Ids and names longer than this are cut in a shortened replay record.
MAX_ID_CHARS = 512
_SOURCE_PROJECT_RE = re.compile(r"//pubsub\.googleapis\.com/projects/([^/]+)/")


def project_from_source(source: str | None) -> str | None:
    """The project of a ``//pubsub.googleapis.com/projects/P/topics/T`` event source."""
    match = _SOURCE_PROJECT_RE.match(source or "")
    return match.group(1) if match else None


@dataclasses.dataclass(frozen=True)
class PubSubDelivery:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: str | None = None
    subscription: str | None = None
    source: str | None = None
    delivery_attempt: int | None = None

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

    def replay_summary(self) -> dict[str, Any]:
        """Enough to find the message again when its replay record is too big to log."""
        return {
            "truncated": True,
            "message_id": clip(self.message_id, MAX_ID_CHARS),
            "publish_time": clip(self.publish_time, MAX_ID_CHARS),
            "subscription": clip(self.subscription, MAX_ID_CHARS),
            "source": clip(self.source, MAX_ID_CHARS),
            "data_bytes": len(self.data),
            "data_sha256": hashlib.sha256(self.data).hexdigest(),
        }


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """A replay record cut to fit a log line: strings clipped, other values as text."""
    summary: dict[str, Any] = {"truncated": True}
    for key, value in record.items():
        if value is None or isinstance(value, (bool, int, float)):
            summary[key] = value
        else:
            summary[key] = clip(as_text(value, MAX_ID_CHARS + 1), MAX_ID_CHARS)
    return summary


def clip(value: str | None, limit: int) -> str | None:
    """A string cut to ``limit`` characters, marked with its full length and digest."""
    if not isinstance(value, str) or len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{value[:limit]}...[{len(value)} chars, sha256 {digest}]"


def as_text(value: Any, limit: int | None) -> str:
    """A JSON value from the event as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if limit is None else text[:limit]


def delivery_from_event(
    event_id: str | None,
    source: str | None,
    data: Any,
) -> PubSubDelivery:
    """Extract the Pub/Sub message; raise EventRejected when the event has none."""
    if not isinstance(data, Mapping) or not isinstance(data.get("message"), Mapping):
        raise EventRejected(
            Reason.NOT_PUBSUB,
            "event data has no Pub/Sub 'message' object",
            {"event_id": event_id, "source": source, "data": as_text(data, 4096)},
        )
    message = data["message"]
    message_id = message.get("messageId") or message.get("message_id") or event_id or ""
    attributes_raw = message.get("attributes") or {}
    attributes = (
        {str(k): as_text(v, 4096) for k, v in attributes_raw.items()}
        if isinstance(attributes_raw, Mapping)
        else {}
    )
    publish_time = message.get("publishTime") or message.get("publish_time")
    subscription = data.get("subscription")
    attempt = data.get("deliveryAttempt")
    common: dict[str, Any] = {
        "message_id": as_text(message_id, None),
        "attributes": attributes,
        "publish_time": publish_time if isinstance(publish_time, str) else None,
        "subscription": subscription if isinstance(subscription, str) else None,
        "source": source,
        "delivery_attempt": attempt if type(attempt) is int and attempt >= 0 else None,
    }
    raw = message.get("data")
    if not isinstance(raw, str) or not raw:
        empty = PubSubDelivery(data=b"", **common)
        raise EventRejected(
            Reason.NO_DATA, "Pub/Sub message has no data (attributes only?)", empty.replay_record()
        )
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        replay = {**PubSubDelivery(data=b"", **common).replay_record(), "data_raw": raw[:4096]}
        raise EventRejected(
            Reason.BAD_BASE64, "Pub/Sub message data is not valid base64", replay
        ) from None
    return PubSubDelivery(data=decoded, **common)
