"""Keyed waits on the relay topic: the ``wait`` and ``event`` messages (docs/events.md).

A message with a top-level ``kind`` is keyed; one without is today's direct
resume (``message.py``), unchanged::

    {"kind": "wait", "callback_url", "method", "expires_at", "key", "source"}
    {"kind": "event", "key", "payload", "event_id", "ttl_seconds"}

This module is imported on every path, so it stays cheap: the direct path pays
one substring test (``b'"kind"' in data``). The store and the correlation are
imported only when keyed waits are on (``EVENT_STORE=firestore``).

An event on the relay topic has the source ``"relay"``: it has no ``source``
field, so it can never pose as an event from another topic.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

from callback_relay.errors import MessageRejected
from callback_relay.message import (
    FAIL_FAST_METHODS,
    callback_url_field,
    encode_payload,
    parse_rfc3339,
    strict_json_object,
)
from callback_relay.outcomes import Reason

WAIT, EVENT = "wait", "event"
KINDS = (WAIT, EVENT)
RELAY_SOURCE = "relay"
# A key is at most this many UTF-8 bytes (docs/events.md, "Bounds").
MAX_KEY_BYTES = 1024
MAX_EVENT_ID_BYTES = 1024
# How long an event may be kept for later waits, at most (7 days).
MAX_TTL_SECONDS = 7 * 24 * 3600
WAIT_FIELDS = frozenset({"kind", "callback_url", "method", "expires_at", "key", "source"})
EVENT_FIELDS = frozenset({"kind", "key", "payload", "event_id", "ttl_seconds"})
_KIND_MARKER = b'"kind"'


@dataclasses.dataclass(frozen=True)
class WaitMessage:
    """A waiting step: resume ``callback_url`` with the next event on (source, key)."""

    callback_url: str
    method: str
    expires_at: datetime.datetime
    key: str
    source: str = RELAY_SOURCE


@dataclasses.dataclass(frozen=True)
class EventMessage:
    """An event for (source, key). ``body_payload`` is the JSON the waiting step receives."""

    key: str
    source: str
    payload: bytes  # compact JSON, encoded once
    event_id: str | None = None
    ttl_seconds: int | None = None  # None: EVENT_TTL_SECONDS


def keyed_kind(data: bytes) -> str | None:
    """The message's ``kind`` when it has one (any value, as text), else None.

    Cheap for the direct path: JSON is decoded only when ``"kind"`` appears in
    the data, and a ``kind`` inside the payload is not a top-level kind.
    """
    if _KIND_MARKER not in data:
        return None
    fields = _lenient_object(data)
    if fields is None or "kind" not in fields:
        return None
    kind = fields["kind"]
    return kind if isinstance(kind, str) else json.dumps(kind)[:40]


def _lenient_object(data: bytes) -> dict[str, Any] | None:
    try:
        fields = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return fields if isinstance(fields, dict) else None


def check_key(key: Any, field: str = "key") -> str:
    """A non-empty string of at most MAX_KEY_BYTES UTF-8 bytes, or MessageRejected."""
    if not isinstance(key, str) or not key:
        raise MessageRejected(Reason.INVALID_KEY, f"{field} must be a non-empty string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise MessageRejected(
            Reason.NOT_STRICT_JSON, f"{field} holds a lone UTF-16 surrogate"
        ) from None
    if size > MAX_KEY_BYTES:
        raise MessageRejected(
            Reason.KEY_TOO_LONG, f"{field} is {size} bytes of UTF-8; the limit is {MAX_KEY_BYTES}"
        )
    return key


def _unknown(fields: dict[str, Any], allowed: frozenset[str], kind: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        shown = ", ".join(ascii(name[:40]) for name in unknown[:5])
        hint = (
            " (an event on the relay topic has the source 'relay')" if "source" in unknown else ""
        )
        raise MessageRejected(Reason.UNKNOWN_FIELD, f"unknown field(s) in a {kind}: {shown}{hint}")


def parse_wait(data: bytes, max_bytes: int) -> WaitMessage:
    fields = strict_json_object(data, max_bytes)
    _unknown(fields, WAIT_FIELDS, "wait")
    url = callback_url_field(fields)
    method = fields.get("method", "POST")
    if method not in FAIL_FAST_METHODS:
        raise MessageRejected(
            Reason.INVALID_METHOD,
            "a wait's method must be POST, PUT or PATCH: the event arrives as the request body",
        )
    raw_expiry = fields.get("expires_at")
    if not isinstance(raw_expiry, str):
        raise MessageRejected(
            Reason.INVALID_EXPIRES_AT, "a wait needs expires_at (an RFC 3339 date-time string)"
        )
    source = fields.get("source", RELAY_SOURCE)
    if not isinstance(source, str) or not source:
        raise MessageRejected(Reason.UNKNOWN_SOURCE, "source must be a non-empty string")
    return WaitMessage(url, method, parse_rfc3339(raw_expiry), check_key(fields.get("key")), source)


def parse_event(data: bytes, max_bytes: int) -> EventMessage:
    fields = strict_json_object(data, max_bytes)
    _unknown(fields, EVENT_FIELDS, "event")
    key = check_key(fields.get("key"))
    event_id = fields.get("event_id")
    if event_id is not None:
        event_id = check_key(event_id, "event_id")
    ttl = fields.get("ttl_seconds")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL_SECONDS
    ):
        raise MessageRejected(
            Reason.INVALID_TTL, f"ttl_seconds must be a whole number from 0 to {MAX_TTL_SECONDS}"
        )
    payload = encode_payload(fields.get("payload", {}))
    return EventMessage(key, RELAY_SOURCE, payload, event_id, ttl)


def unknown_kind(kind: str) -> MessageRejected:
    return MessageRejected(
        Reason.UNKNOWN_KIND,
        f"kind {kind[:40]!a} is not one of {', '.join(KINDS)} (no kind: a direct resume)",
    )


def keyed_waits_off(kind: str) -> MessageRejected:
    return MessageRejected(
        Reason.KEYED_WAITS_OFF,
        f"a {kind if kind in KINDS else 'keyed'} message, but keyed waits are off"
        " (set EVENT_STORE=firestore)",
    )
