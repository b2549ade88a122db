"""The callback message: the contract between a publisher and the relay.

Pub/Sub data is UTF-8 JSON matching ``schemas/callback-message.schema.json``::

    {"callback_url": "https://workflowexecutions.googleapis.com/v1/...",
     "payload": {...}, "method": "POST", "expires_at": "2026-01-01T00:00:00Z"}

Data that is nothing but a URL is shorthand for ``{"callback_url": URL}``.
Parsing never raises anything but ``MessageRejected``.

Strict JSON (RFC 8259, https://www.rfc-editor.org/rfc/rfc8259): the relay sends
the payload to Workflows, so it only accepts what every JSON parser reads the
same way. ``NaN``/``Infinity``, numbers that overflow a double (``1e400``) and
strings holding a lone surrogate (``"\\ud800"``, RFC 8259 section 8.2) are
rejected with ``not_strict_json``. None of them can be fixed losslessly:
``1e400`` has no double, and a lone surrogate has no UTF-8 encoding, so any
"fix" would change the value the workflow receives.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
from typing import Any

from callback_relay.errors import MessageRejected
from callback_relay.json_top_level import string_fields
from callback_relay.outcomes import Reason

# Methods that events.create_callback_endpoint accepts.
# https://cloud.google.com/workflows/docs/creating-callback-endpoints
CALLBACK_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
# A body on GET or HEAD is not something a callback can receive.
BODYLESS_METHODS = frozenset({"GET", "HEAD"})
MAX_CALLBACK_URL_LENGTH = 2048
FIELDS = frozenset({"callback_url", "payload", "method", "expires_at", "metadata"})
# Methods whose request carries a body, so that the waiting step can receive an
# error body when its message is rejected. DELETE and OPTIONS are left out: a
# body on them "has no generally defined semantics" (RFC 9110, 9.3.5 and 9.3.7),
# and a resume whose error body was dropped would look like success.
FAIL_FAST_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Past this size (Pub/Sub's own limit) a rejected message is not read again.
FAIL_FAST_MAX_BYTES = 10 * 1024 * 1024
_REPLY_FIELDS = frozenset({"callback_url", "method", "expires_at"})
# A callback URL of MAX_CALLBACK_URL_LENGTH characters, each written as a \uXXXX escape.
_MAX_REPLY_FIELD_BYTES = 6 * MAX_CALLBACK_URL_LENGTH + 2
# How many unknown field names a reason lists, and how much of each.
_MAX_NAMES, _MAX_NAME_CHARS = 5, 40

# RFC 3339 date-time (https://www.rfc-editor.org/rfc/rfc3339#section-5.6) with
# each field's range; the schema carries the same pattern, and the code below
# rejects the rest (Feb 30), as jsonschema's format checker does. Year 0000 is
# refused by the pattern itself: ajv-formats' date-time accepts it.
# It ends in `$(?!\n)`: in Python `$` also matches before a trailing newline
# (jsonschema uses re.search), in ECMA-262 it does not; with the lookahead both
# mean "end of the string".
RFC3339_PATTERN = (
    r"^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$(?!\n)"
)
_RFC3339_RE = re.compile(RFC3339_PATTERN)
_FRACTION_RE = re.compile(r"(\.[0-9]{6})[0-9]+")
_WHITESPACE = " \t\r\n"
# An escape of a UTF-16 surrogate: a valid pair is fine, a lone one is not.
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_UTC_MIN = datetime.datetime.min.replace(tzinfo=datetime.UTC)
_UTC_MAX = datetime.datetime.max.replace(tzinfo=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class CallbackMessage:
    callback_url: str
    method: str = "POST"
    # The body exactly as it will be sent; encoded once, here.
    body: bytes | None = b"{}"
    expires_at: datetime.datetime | None = None
    # The producer's own data: logged with the outcome, never sent.
    metadata: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class ReplyTo:
    """Where to send the error for a message that breaks the contract."""

    callback_url: str
    method: str
    # When the message's own expires_at is readable: no error is sent after it.
    expires_at: datetime.datetime | None = None


def _reject_constant(name: str) -> Any:
    raise MessageRejected(Reason.NOT_STRICT_JSON, f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MessageRejected(
            Reason.NOT_STRICT_JSON, f"number {text[:40]} does not fit a double-precision float"
        )
    return value


def parse_rfc3339(value: str) -> datetime.datetime:
    """An aware datetime in UTC; instants beyond Python's range are clamped to it.

    What jsonschema's ``date-time`` format checker (rfc3339-validator) accepts,
    and nothing else: years 0001-9999, real calendar dates, seconds 00-59 (it
    has no leap seconds), offsets up to 23:59, upper or lower case T and Z.
    """
    if not _RFC3339_RE.match(value):
        raise MessageRejected(Reason.INVALID_EXPIRES_AT, "expires_at must be an RFC 3339 date-time")
    # Python keeps microseconds: drop any nanosecond digits.
    text = _FRACTION_RE.sub(r"\1", value.upper().replace("Z", "+00:00"))
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise MessageRejected(
            Reason.INVALID_EXPIRES_AT, "expires_at is not a real date and time"
        ) from None
    try:
        return when.astimezone(datetime.UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is before year 1 in UTC; 9999-12-31T23:59:59-01:00 after 9999.
        return _UTC_MIN if when.year == 1 else _UTC_MAX


def _field_names(names: list[str]) -> str:
    shown = [ascii(name[:_MAX_NAME_CHARS]) for name in names[:_MAX_NAMES]]
    more = f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else ""
    return ", ".join(shown) + more


def encode_payload(payload: Any) -> bytes:
    """The payload as compact strict JSON, or MessageRejected."""
    try:
        return json.dumps(
            payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except UnicodeEncodeError:
        raise MessageRejected(
            Reason.NOT_STRICT_JSON, "payload holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
        ) from None
    except ValueError:
        raise MessageRejected(Reason.NOT_STRICT_JSON, "payload holds NaN or Infinity") from None
    except RecursionError:
        raise MessageRejected(Reason.INVALID_JSON, "payload is nested too deeply") from None


def callback_url_field(fields: dict[str, Any]) -> str:
    """The message's ``callback_url``: a non-empty string of at most 2048 characters.

    Its shape is the URL policy's to judge (callback_url_policy.py), at call time.
    """
    url = fields.get("callback_url")
    if not isinstance(url, str) or not url:
        raise MessageRejected(
            Reason.MISSING_CALLBACK_URL, "callback_url must be a non-empty string"
        )
    if len(url) > MAX_CALLBACK_URL_LENGTH:
        raise MessageRejected(
            Reason.INVALID_CALLBACK_URL, f"callback_url is longer than {MAX_CALLBACK_URL_LENGTH}"
        )
    return url


def _from_object(fields: dict[str, Any]) -> CallbackMessage:
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise MessageRejected(Reason.UNKNOWN_FIELD, f"unknown field(s): {_field_names(unknown)}")
    url = callback_url_field(fields)
    method = fields.get("method", "POST")
    if method not in CALLBACK_METHODS:
        raise MessageRejected(
            Reason.INVALID_METHOD, f"method must be one of {', '.join(CALLBACK_METHODS)}"
        )
    expires_at = None
    if "expires_at" in fields:
        expires_raw = fields["expires_at"]
        if not isinstance(expires_raw, str):
            raise MessageRejected(Reason.INVALID_EXPIRES_AT, "expires_at must be a string")
        expires_at = parse_rfc3339(expires_raw)
    if "metadata" in fields and not isinstance(fields["metadata"], dict):
        raise MessageRejected(Reason.INVALID_METADATA, "metadata must be a JSON object")
    metadata = fields.get("metadata")
    body: bytes | None
    if method in BODYLESS_METHODS:
        if fields.get("payload", {}) != {}:
            raise MessageRejected(
                Reason.PAYLOAD_NOT_ALLOWED, f"a {method} callback carries no payload"
            )
        body = None
    else:
        body = encode_payload(fields.get("payload", {}))
    return CallbackMessage(url, method, body, expires_at, metadata)


# Built once: json.loads with a keyword builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def parse_message_data(data: bytes, max_bytes: int) -> CallbackMessage:
    """Decode Pub/Sub message data into a CallbackMessage, or raise MessageRejected."""
    text = _message_text(data, max_bytes)
    if not text.startswith(("{", "[", '"')) and "://" in text:
        # Shorthand: the data is just the callback URL.
        return _from_object({"callback_url": text})
    fields = _strict_object(text, "message data must be a JSON object or a bare callback URL")
    try:
        return _from_object(fields)
    except RecursionError:
        raise MessageRejected(Reason.INVALID_JSON, "payload is nested too deeply") from None


def strict_json_object(data: bytes, max_bytes: int) -> dict[str, Any]:
    """The data as a strict JSON object (the checks of parse_message_data), or MessageRejected.

    For the keyed messages (keyed_message.py), which have their own fields.
    """
    return _strict_object(_message_text(data, max_bytes), "message data must be a JSON object")


def _message_text(data: bytes, max_bytes: int) -> str:
    """The data as text without surrounding whitespace: at most ``max_bytes``, UTF-8, not empty."""
    if len(data) > max_bytes:
        raise MessageRejected(
            Reason.TOO_LARGE, f"message data is {len(data)} bytes; the limit is {max_bytes}"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageRejected(
            Reason.NOT_UTF8, f"message data is not UTF-8 ({exc.reason})"
        ) from None
    stripped = text.strip(_WHITESPACE)
    if not stripped:
        raise MessageRejected(Reason.EMPTY, "message data is empty")
    return stripped


def _strict_object(text: str, not_an_object: str) -> dict[str, Any]:
    """``text`` as strict JSON (RFC 8259, module docstring) that is an object."""
    try:
        fields = _DECODER.decode(text)
    except MessageRejected:
        raise
    except (ValueError, RecursionError) as exc:
        raise MessageRejected(
            Reason.INVALID_JSON, f"message data is not JSON ({str(exc)[:200]})"
        ) from None
    if not isinstance(fields, dict):
        raise MessageRejected(Reason.NOT_AN_OBJECT, not_an_object)
    try:
        if "\\u" in text and _SURROGATE_ESCAPE_RE.search(text):
            _reject_lone_surrogates(fields)
    except RecursionError:
        raise MessageRejected(Reason.INVALID_JSON, "payload is nested too deeply") from None
    return fields


def _reject_lone_surrogates(fields: dict[str, Any]) -> None:
    try:
        json.dumps(fields, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise MessageRejected(
            Reason.NOT_STRICT_JSON, "message holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
        ) from None


def fail_fast_target(data: bytes) -> ReplyTo | None:
    """The callback a rejected message names, when it can receive an error body.

    Read leniently (NaN, lone surrogates, unknown fields and a size over the
    limit are what the message may have been rejected for), and only for
    ``callback_url``, ``method`` and ``expires_at``, at the top level of the
    object, without building the rest of it (``json_top_level``): a non-empty
    string URL and a method in FAIL_FAST_METHODS, in any case (POST when absent;
    sent upper-case). An ``expires_at`` that does not parse is ignored. The URL
    policy still decides whether the relay may call it.
    """
    if len(data) > FAIL_FAST_MAX_BYTES:
        return None
    fields = string_fields(data, _REPLY_FIELDS, _MAX_REPLY_FIELD_BYTES)
    if fields is None:
        return None
    url, method = fields.get("callback_url"), fields.get("method", "POST")
    if not isinstance(url, str) or not 0 < len(url) <= MAX_CALLBACK_URL_LENGTH:
        return None
    # "post" for "POST" is the likeliest typo: the callback still takes the error.
    # ASCII only: "po\u017ft".upper() (a long s) is "POST" too.
    if not isinstance(method, str) or not method.isascii():
        return None
    if method.upper() not in FAIL_FAST_METHODS:
        return None
    return ReplyTo(url, method.upper(), _lenient_expires_at(fields.get("expires_at")))


def _lenient_expires_at(value: str | None) -> datetime.datetime | None:
    try:
        return None if value is None else parse_rfc3339(value)
    except MessageRejected:
        return None
