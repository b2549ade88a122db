"""The shapes a Pub/Sub message reaches the function in, built in one place.

- Eventarc's Pub/Sub trigger POSTs a binary-mode CloudEvent: ``ce-*`` headers
  (type ``google.cloud.pubsub.topic.v1.messagePublished``, source
  ``//pubsub.googleapis.com/projects/P/topics/T``) and the JSON body
  ``{"message": {data, attributes, messageId, publishTime}, "subscription"}``.
  Eventarc sends the message's fields in both spellings (``messageId`` and
  ``message_id``). Sample:
  https://github.com/googleapis/google-cloudevents/blob/main/examples/structured/pubsub/MessagePublishedData.json
- The same event in structured mode (``application/cloudevents+json``).
- A raw Pub/Sub push body, which functions-framework converts into the event: what
  deploy.sh's push subscription sends, to FUNCTION_URL/projects/P/topics/T so that the
  event's source names the topic (``_PUBSUB_TOPIC_REQUEST_PATH`` in
  functions_framework/event_conversion.py). ``deliveryAttempt`` is in the body when the
  subscription has a dead-letter policy (https://cloud.google.com/pubsub/docs/handling-failures).
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

PROJECT = "test-project"
TOPIC = "workflows-callback-relay"
TOPIC_PATH = f"projects/{PROJECT}/topics/{TOPIC}"
SOURCE = f"//pubsub.googleapis.com/{TOPIC_PATH}"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/eventarc-us-central1-relay-sub-001"
EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
PUBLISH_TIME = "2026-11-28T12:00:00.123Z"
PUSH_PATH = f"/{TOPIC_PATH}"


def push_path(topic: str) -> str:
    """The push endpoint's path for a topic (projects/P/topics/T): deploy.sh's convention."""
    return f"/{topic}"


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def message_data(callback_url: str, **fields: Any) -> bytes:
    """The relay message, as a producer publishes it."""
    return json.dumps({"callback_url": callback_url, **fields}).encode()


def pubsub_message(
    data: bytes | None,
    message_id: str = "1001",
    attributes: dict[str, str] | None = None,
    publish_time: str = PUBLISH_TIME,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
        "attributes": attributes or {},
    }
    if data is not None:
        message["data"] = base64.b64encode(data).decode("ascii")
    return message


def eventarc_binary(
    data: bytes | None,
    message_id: str = "1001",
    traceparent: str | None = None,
    *,
    attributes: dict[str, str] | None = None,
    publish_time: str = PUBLISH_TIME,
    topic: str = TOPIC_PATH,
    subscription: str = SUBSCRIPTION,
) -> tuple[dict[str, str], dict[str, Any]]:
    """(headers, body) of the binary CloudEvent an Eventarc Pub/Sub trigger sends."""
    headers = {
        "ce-id": message_id,
        "ce-source": f"//pubsub.googleapis.com/{topic}",
        "ce-type": EVENT_TYPE,
        "ce-specversion": "1.0",
        "ce-time": publish_time,
        "Content-Type": "application/json",
    }
    if traceparent:
        headers["ce-traceparent"] = traceparent
    body = {
        "message": pubsub_message(data, message_id, attributes, publish_time),
        "subscription": subscription,
    }
    return headers, body


def binary_cloudevent(
    message_id: str,
    data: bytes,
    attributes: dict[str, str],
    publish_time: datetime.datetime,
    subscription: str,
    topic: str,
) -> tuple[dict[str, str], bytes]:
    """eventarc_binary for a real message, with the body encoded for sending."""
    headers, body = eventarc_binary(
        data,
        message_id,
        attributes=attributes,
        publish_time=rfc3339(publish_time),
        topic=topic,
        subscription=subscription,
    )
    return headers, json.dumps(body).encode()


def pulled_cloudevent(message: Any, subscription: str, topic: str) -> tuple[dict[str, str], bytes]:
    """binary_cloudevent for a message pulled with google-cloud-pubsub."""
    return binary_cloudevent(
        message.message_id,
        message.data,
        dict(message.attributes),
        message.publish_time,
        subscription,
        topic,
    )


def http_request(headers: dict[str, str], body: bytes, host: str) -> bytes:
    """One complete keep-alive HTTP/1.1 POST, for load generators that write raw bytes."""
    lines = [
        "POST / HTTP/1.1",
        f"Host: {host}",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


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


def raw_push(
    data: bytes | None,
    message_id: str = "1001",
    *,
    attributes: dict[str, str] | None = None,
    publish_time: str = PUBLISH_TIME,
    subscription: str = f"projects/{PROJECT}/subscriptions/relay-push",
    delivery_attempt: int | None = None,
) -> dict[str, Any]:
    """The body Pub/Sub push sends, which functions-framework converts."""
    body: dict[str, Any] = {
        "message": pubsub_message(data, message_id, attributes, publish_time),
        "subscription": subscription,
    }
    if delivery_attempt is not None:
        body["deliveryAttempt"] = delivery_attempt
    return body


def pulled_push(
    message: Any, subscription: str, delivery_attempt: int | None
) -> tuple[dict[str, str], bytes]:
    """(headers, body) of the push request Pub/Sub sends for a message pulled with
    google-cloud-pubsub: no ``ce-*`` headers, the raw push body."""
    body = raw_push(
        message.data,
        message.message_id,
        attributes=dict(message.attributes),
        publish_time=rfc3339(message.publish_time),
        subscription=subscription,
        delivery_attempt=delivery_attempt,
    )
    return {"Content-Type": "application/json"}, json.dumps(body).encode()
