"""The callback message: the contract between a publisher and the relay.

Pub/Sub data is UTF-8 JSON matching ``schemas/callback-message.schema.json``::

    {"callback_url": "https://workflowexecutions.googleapis.com/v1/...",
     "payload": {...}, "method": "POST", "expires_at": "2026-01-01T00:00:00Z"}

Data that is nothing but a URL is shorthand for ``{"callback_url": URL}``.
Parsing never raises anything but ``MessageRejected``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from typing import Any

from callback_relay.rejection import Rejection

# Methods that events.create_callback_endpoint accepts.
# https://cloud.google.com/workflows/docs/creating-callback-endpoints
CALLBACK_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
# A body on GET or HEAD is not something a callback can receive.
BODYLESS_METHODS = frozenset({"GET", "HEAD"})
MAX_CALLBACK_URL_LENGTH = 2048
FIELDS = frozenset({"callback_url", "payload", "method", "expires_at"})

# RFC 3339 date-time; the schema carries the same pattern.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339_RE = re.compile(RFC3339_PATTERN)
_WHITESPACE = " \t\r\n"


class MessageRejected(Rejection):
    """The message can never be relayed; ``reason`` is a stable machine-readable code."""


@dataclasses.dataclass(frozen=True)
class CallbackMessage:
    callback_url: str
    method: str = "POST"
    # The body exactly as it will be sent; encoded once, here.
    body: bytes | None = b"{}"
    expires_at: datetime.datetime | None = None


def _reject_constant(name: str) -> Any:
    raise MessageRejected("invalid_json", f"JSON constant {name} is not allowed")


def parse_rfc3339(value: str) -> datetime.datetime:
    if not _RFC3339_RE.match(value):
        raise MessageRejected("invalid_expires_at", "expires_at must be an RFC 3339 date-time")
    # Python keeps microseconds: drop any nanosecond digits.
    text = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", value.upper().replace("Z", "+00:00"))
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise MessageRejected(
            "invalid_expires_at", "expires_at is not a real date and time"
        ) from None


def _from_object(fields: dict[str, Any]) -> CallbackMessage:
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise MessageRejected("unknown_field", f"unknown field(s): {', '.join(unknown)}")
    url = fields.get("callback_url")
    if not isinstance(url, str) or not url:
        raise MessageRejected("missing_callback_url", "callback_url must be a non-empty string")
    if len(url) > MAX_CALLBACK_URL_LENGTH:
        raise MessageRejected(
            "invalid_callback_url", f"callback_url is longer than {MAX_CALLBACK_URL_LENGTH}"
        )
    method = fields.get("method", "POST")
    if method not in CALLBACK_METHODS:
        raise MessageRejected(
            "invalid_method", f"method must be one of {', '.join(CALLBACK_METHODS)}"
        )
    expires_at = None
    if "expires_at" in fields:
        expires_raw = fields["expires_at"]
        if not isinstance(expires_raw, str):
            raise MessageRejected("invalid_expires_at", "expires_at must be a string")
        expires_at = parse_rfc3339(expires_raw)
    body: bytes | None
    if method in BODYLESS_METHODS:
        if fields.get("payload", {}) != {}:
            raise MessageRejected("payload_not_allowed", f"a {method} callback carries no payload")
        body = None
    else:
        body = json.dumps(
            fields.get("payload", {}), separators=(",", ":"), ensure_ascii=False
        ).encode()
    return CallbackMessage(callback_url=url, method=method, body=body, expires_at=expires_at)


# Built once: json.loads with a keyword builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_message_data(data: bytes, max_bytes: int) -> CallbackMessage:
    """Decode Pub/Sub message data into a CallbackMessage, or raise MessageRejected."""
    if len(data) > max_bytes:
        raise MessageRejected(
            "too_large", f"message data is {len(data)} bytes; the limit is {max_bytes}"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageRejected("not_utf8", f"message data is not UTF-8 ({exc.reason})") from None
    stripped = text.strip(_WHITESPACE)
    if not stripped:
        raise MessageRejected("empty", "message data is empty")
    if not stripped.startswith(("{", "[", '"')) and "://" in stripped:
        # Shorthand: the data is just the callback URL.
        return _from_object({"callback_url": stripped})
    try:
        fields = _DECODER.decode(stripped)
    except MessageRejected:
        raise
    except (ValueError, RecursionError) as exc:
        raise MessageRejected("invalid_json", f"message data is not JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise MessageRejected(
            "not_an_object", "message data must be a JSON object or a bare callback URL"
        )
    try:
        return _from_object(fields)
    except RecursionError:
        raise MessageRejected("invalid_json", "payload is nested too deeply") from None
