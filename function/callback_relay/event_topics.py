"""Events from topics you already have: EVENT_TOPICS, and the key templates over their messages.

``EVENT_TOPICS`` is a JSON object from a topic (its id, or
``projects/P/topics/T``) to how its messages become events::

    {"orders-shipped": "order:{attributes.orderId}",
     "orders-paid": {"key": "order:{data.order.id}", "event_id": "{data.paymentId}"},
     "incoming-files": "cloud-storage"}

A template is text with ``{attributes.NAME}`` (a message attribute),
``{data.FIELD.FIELD}`` (a field of the message's JSON data) or ``{data}`` (the
data as text); ``{{`` and ``}}`` stand for braces. Without ``event_id`` the
Pub/Sub message id is the event id, so a redelivery is recognised.

``"cloud-storage"`` is the preset for a bucket's Pub/Sub notifications
(https://cloud.google.com/storage/docs/pubsub-notifications): the key
``gs://{attributes.bucketId}/{attributes.objectId}`` and the event id
``{attributes.objectGeneration}``, so the same object generation is one
event, however often Cloud Storage or Pub/Sub delivers it (attribute names as
Google's sample reads them: ``storage/cloud-client/notification_polling.py`` in
GoogleCloudPlatform/python-docs-samples).

Which topic a delivery came from is the CloudEvent's ``source``,
``//pubsub.googleapis.com/projects/P/topics/T``: set by Eventarc, and by
functions-framework from the request path of a direct push
(``_PUBSUB_TOPIC_REQUEST_PATH`` in functions_framework/event_conversion.py), so a
push subscription's endpoint is ``FUNCTION_URL/projects/P/topics/T``. Never from
the message itself.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from callback_relay.errors import ConfigError, MessageRejected
from callback_relay.outcomes import Reason

CLOUD_STORAGE_PRESET = "cloud-storage"
CLOUD_STORAGE_KEY = "gs://{attributes.bucketId}/{attributes.objectId}"
CLOUD_STORAGE_EVENT_ID = "{attributes.objectGeneration}"
_TOPIC_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9._~+%-]{2,254}")
_TOPIC_NAME_RE = re.compile(r"projects/[a-z0-9:.-]{1,100}/topics/[A-Za-z][A-Za-z0-9._~+%-]{2,254}")
_SOURCE_RE = re.compile(r"//pubsub\.googleapis\.com/(projects/[^/]+/topics/([^/]+))")
_PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FIELD_RE = re.compile(r"(attributes)\.(.+)|(data)(?:\.(.+))?")


@dataclasses.dataclass(frozen=True)
class Template:
    """Literal text and placeholders: each part a str, or a (where, path) pair."""

    text: str
    parts: tuple[str | tuple[str, tuple[str, ...]], ...]

    @classmethod
    def parse(cls, text: str, what: str) -> Template:
        parts: list[str | tuple[str, tuple[str, ...]]] = []
        position = 0
        for match in _PLACEHOLDER_RE.finditer(text):
            parts.append(text[position : match.start()])
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
                continue
            field = _FIELD_RE.fullmatch(match.group(1) or "")
            if field is None:
                raise ConfigError(
                    f"{what}: {token!r} is not {{attributes.NAME}}, {{data}} or {{data.FIELD}}"
                    " (write {{ and }} for braces)"
                )
            if field.group(1):
                parts.append(("attributes", (field.group(2),)))
            else:
                path = tuple(field.group(4).split(".")) if field.group(4) else ()
                parts.append(("data", path))
        parts.append(text[position:])
        return cls(text, tuple(p for p in parts if p != ""))

    def render(self, attributes: Mapping[str, str], data: bytes) -> str:
        out: list[str] = []
        decoded: list[Any] = []  # the JSON data, decoded at most once
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            where, path = part
            if where == "attributes":
                value: Any = attributes.get(path[0])
            elif not path:
                value = _text(data)
            else:
                if not decoded:
                    decoded.append(_json(data))
                value = decoded[0]
                for name in path:
                    value = value.get(name) if isinstance(value, dict) else None
            text = _scalar(value)
            if text is None:
                shown = where + "".join(f".{name}" for name in path)
                raise MessageRejected(
                    Reason.KEY_TEMPLATE_UNRESOLVED,
                    f"{{{shown}}} of {self.text!r} is missing or not a string, number or boolean",
                )
            out.append(text)
        return "".join(out)


@dataclasses.dataclass(frozen=True)
class EventTopic:
    """How the messages of one topic become events. ``source`` is the EVENT_TOPICS name."""

    source: str
    key: Template
    event_id: Template | None = None


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float) and value == value:
        return json.dumps(value)
    return None


def event_payload(data: bytes, attributes: Mapping[str, str]) -> Any:
    """What the waiting step receives as ``payload`` for a message of an existing topic."""
    text = _text(data)
    if text is None:
        return {"data_base64": base64.b64encode(data).decode("ascii"), "attributes": attributes}
    value = _json(data) if text.strip() else None
    if value is None or _has_non_finite(value):
        return {"data": text, "attributes": dict(attributes)}
    return {"data": value, "attributes": dict(attributes)}


def _has_non_finite(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, RecursionError):
        return True
    return False


class EventTopics:
    """The configured topics, found by a CloudEvent's source."""

    def __init__(self, topics: Mapping[str, EventTopic] | None = None) -> None:
        self._topics = dict(topics or {})

    def __bool__(self) -> bool:
        return bool(self._topics)

    def __contains__(self, source: str) -> bool:
        return source in self._topics

    @property
    def sources(self) -> frozenset[str]:
        return frozenset(self._topics)

    def for_source(self, event_source: str | None) -> EventTopic | None:
        """The topic a delivery came from, if it is one of EVENT_TOPICS."""
        if not self._topics or not event_source:
            return None
        match = _SOURCE_RE.fullmatch(event_source)
        if match is None:
            return None
        return self._topics.get(match.group(1)) or self._topics.get(match.group(2))


def parse_event_topics(raw: str) -> EventTopics:
    """EVENT_TOPICS as EventTopics, or ConfigError naming what is wrong."""
    if not raw.strip():
        return EventTopics()
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"EVENT_TOPICS is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError("EVENT_TOPICS must be a JSON object from topic to key template")
    topics: dict[str, EventTopic] = {}
    for topic, spec in config.items():
        what = f"EVENT_TOPICS[{topic!r}]"
        if not (_TOPIC_ID_RE.fullmatch(topic) or _TOPIC_NAME_RE.fullmatch(topic)):
            raise ConfigError(f"{what}: not a topic id or projects/PROJECT/topics/TOPIC")
        if topic == "relay":
            raise ConfigError(f"{what}: 'relay' is the source of events on the relay topic")
        if spec == CLOUD_STORAGE_PRESET:
            spec = {"key": CLOUD_STORAGE_KEY, "event_id": CLOUD_STORAGE_EVENT_ID}
        if isinstance(spec, str):
            spec = {"key": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("key"), str):
            raise ConfigError(
                f"{what}: must be a template, {{'key', 'event_id'}} or 'cloud-storage'"
            )
        unknown = set(spec) - {"key", "event_id"}
        if unknown:
            raise ConfigError(f"{what}: unknown field(s) {sorted(unknown)}")
        event_id = spec.get("event_id")
        if event_id is not None and not isinstance(event_id, str):
            raise ConfigError(f"{what}: event_id must be a template string")
        topics[topic] = EventTopic(
            topic,
            Template.parse(spec["key"], f"{what}.key"),
            Template.parse(event_id, f"{what}.event_id") if event_id else None,
        )
    return EventTopics(topics)
