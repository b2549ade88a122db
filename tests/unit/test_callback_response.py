from __future__ import annotations

import datetime
import json

import pytest

from callback_relay.callback_response import Kind, classify_response, parse_retry_after


def error(code: int, status: str, message: str, details: list[object] | None = None) -> bytes:
    body: dict[str, object] = {"code": code, "status": status, "message": message}
    if details is not None:
        body["details"] = details
    return json.dumps({"error": body}).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, b"", Kind.DELIVERED),
        (204, b"", Kind.DELIVERED),
        (404, error(404, "NOT_FOUND", "Requested entity was not found."), Kind.EXECUTION_GONE),
        (
            429,
            error(429, "RESOURCE_EXHAUSTED", "Callback already has a pending request"),
            Kind.ALREADY_PENDING,
        ),
        (
            429,
            error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Requests'"),
            Kind.TRANSIENT,
        ),
        (
            429,
            error(
                429,
                "RESOURCE_EXHAUSTED",
                "pending",
                [{"@type": "type.googleapis.com/google.rpc.QuotaFailure"}],
            ),
            Kind.TRANSIENT,
        ),
        (429, b"", Kind.TRANSIENT),  # unrecognised 429: retrying is always safe
        (401, error(401, "UNAUTHENTICATED", "bad"), Kind.TRANSIENT),
        (403, error(403, "PERMISSION_DENIED", "denied"), Kind.TRANSIENT),
        (408, b"", Kind.TRANSIENT),
        (500, b"<html>", Kind.TRANSIENT),
        (503, b"", Kind.TRANSIENT),
        (400, error(400, "INVALID_ARGUMENT", "bad"), Kind.PERMANENT),
        (405, b"", Kind.PERMANENT),
        (409, b"", Kind.PERMANENT),
        (413, b"", Kind.PERMANENT),
        (302, b"", Kind.PERMANENT),
    ],
)
def test_classification_table(status: int, body: bytes, kind: Kind) -> None:
    result = classify_response(status, {}, body)
    assert result.kind is kind
    assert result.status == status
    assert result.reason


def test_error_message_is_kept_short() -> None:
    result = classify_response(400, {}, error(400, "INVALID_ARGUMENT", "x" * 10_000))
    assert 0 < len(result.error_excerpt) <= 300


def test_retry_after_is_read_from_transient_answers() -> None:
    assert classify_response(503, {"Retry-After": "7"}, b"").retry_after_seconds == 7


def test_retry_after_forms() -> None:
    now = datetime.datetime(2026, 11, 28, 12, 0, 0, tzinfo=datetime.UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now) == 30
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
