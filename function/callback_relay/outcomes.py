"""What happened to a message (``Outcome``) and why it was refused (``Reason``).

Both are ``StrEnum``: the values are the stable strings in log lines and HTTP
replies, and a misspelt member is an AttributeError at import, not a silent 500.
"""

from __future__ import annotations

import enum


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    ALREADY_PENDING = "already_pending"
    EXECUTION_GONE = "execution_gone"
    CALLBACK_REJECTED = "callback_rejected"
    MESSAGE_REJECTED = "message_rejected"
    URL_REFUSED = "url_refused"
    EXPIRED = "expired"
    # The message broke the contract; its callback was resumed with the error.
    FAILED_FAST = "failed_fast"
    # Not final: the message is kept and Pub/Sub redelivers it.
    REDELIVERY_REQUESTED = "redelivery_requested"
    # A bug in the relay; also not final, so the message can be replayed after a fix.
    INTERNAL_ERROR = "internal_error"
    # Keyed waits (docs/events.md): a wait stored until its event, an event
    # taken (its waiters' calls are logged on lines of their own), a repeat.
    WAIT_REGISTERED = "wait_registered"
    EVENT_RECEIVED = "event_received"
    DUPLICATE = "duplicate"


class Reason(enum.StrEnum):
    """Why a message, event or URL can never be relayed."""

    # The data itself.
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    EMPTY = "empty"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    # JSON that RFC 8259 parsers may read differently: 1e400, lone surrogates.
    NOT_STRICT_JSON = "not_strict_json"
    # The contract.
    UNKNOWN_FIELD = "unknown_field"
    MISSING_CALLBACK_URL = "missing_callback_url"
    INVALID_CALLBACK_URL = "invalid_callback_url"
    INVALID_METHOD = "invalid_method"
    INVALID_EXPIRES_AT = "invalid_expires_at"
    INVALID_METADATA = "invalid_metadata"
    PAYLOAD_NOT_ALLOWED = "payload_not_allowed"
    # The CloudEvent around the message.
    NOT_PUBSUB = "not_pubsub"
    NO_DATA = "no_data"
    BAD_BASE64 = "bad_base64"
    # The callback URL policy.
    FORBIDDEN_CHARACTERS = "forbidden_characters"
    WRONG_ORIGIN = "wrong_origin"
    WRONG_PATH = "wrong_path"
    WORKFLOW_NOT_ALLOWED = "workflow_not_allowed"
    # Keyed waits and events (docs/events.md).
    UNKNOWN_KIND = "unknown_kind"
    KEYED_WAITS_OFF = "keyed_waits_off"
    INVALID_KEY = "invalid_key"
    KEY_TOO_LONG = "key_too_long"
    UNKNOWN_SOURCE = "unknown_source"
    INVALID_TTL = "invalid_ttl"
    KEY_TEMPLATE_UNRESOLVED = "key_template_unresolved"
    TOO_MANY_WAITERS = "too_many_waiters"
    TOO_MANY_EVENTS = "too_many_events"
    KEY_FULL = "key_full"
    # A relay_http request that is not one message given once by POST.
    METHOD_NOT_ALLOWED = "method_not_allowed"
    AMBIGUOUS_REQUEST = "ambiguous_request"

    @property
    def is_syntax(self) -> bool:
        """The data is not a JSON object at all (as opposed to breaking the contract)."""
        return self in _SYNTAX


_SYNTAX = frozenset({Reason.NOT_UTF8, Reason.EMPTY, Reason.INVALID_JSON, Reason.NOT_AN_OBJECT})
