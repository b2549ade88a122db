from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callback_relay.callback_response import (
    MAX_RETRY_AFTER_SECONDS,
    Kind,
    classify_response,
    parse_retry_after,
)


def error(code: int, status: str, message: str, details: list[object] | None = None) -> bytes:
    body: dict[str, object] = {"code": code, "status": status, "message": message}
    if details is not None:
        body["details"] = details
    return json.dumps({"error": body}).encode()


def _info(reason: str) -> dict[str, object]:
    return {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}


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


# -- generated inputs: peers' garbage is classified, never thrown -------------

_MONTHS = ["Jan", "Feb", "Mar", "Nov", "Dec", "Foo", ""]
_DAYS = ["Mon", "Sat", "Sun", "Xyz", ""]
_http_dates = st.builds(
    "{}, {} {} {} {}:{}:{} {}".format,
    st.sampled_from(_DAYS),
    st.integers(-(10**12), 10**12),
    st.sampled_from(_MONTHS),
    st.integers(-(10**12), 10**12),
    st.integers(-(10**6), 10**6),
    st.integers(-(10**6), 10**6),
    st.integers(-(10**6), 10**6),
    st.sampled_from(["GMT", "UTC", "+9999", "-9999", "+0000", "EST", "", "Z"]),
)
_retry_after_values = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=20),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    _http_dates,
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),  # as http.client decodes
)


@settings(max_examples=250, deadline=None)
@given(_retry_after_values)
def test_retry_after_is_a_bounded_number_or_none(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or 0 <= seconds <= MAX_RETRY_AFTER_SECONDS


@given(st.integers(0, 10**40))
def test_retry_after_delay_seconds_are_read_exactly_and_capped(n: int) -> None:
    assert parse_retry_after(str(n)) == min(n, MAX_RETRY_AFTER_SECONDS)


@given(st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=8))
def test_retry_after_non_ascii_digits_are_not_a_number(value: str) -> None:
    if not value.isascii():
        assert parse_retry_after(value) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return ('{"error": ' + opener * depth + "1" + closer * depth + "}").encode()


_bodies = st.one_of(
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps({"error": v}).encode()),
    st.fixed_dictionaries({"status": _json, "message": _json, "details": _json, "code": _json}).map(
        lambda e: json.dumps({"error": e}).encode()
    ),
    st.builds(_nested, st.integers(900, 20_000), st.sampled_from(["[", '{"a":'])),
)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(100, 999),
    _bodies,
    st.booleans(),
    st.one_of(st.none(), _retry_after_values),
)
def test_any_answer_is_classified(
    status: int, body: bytes, complete: bool, retry_after: str | None
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    result = classify_response(status, headers, body, complete)
    assert isinstance(result.kind, Kind)
    assert result.reason
    assert len(result.error_excerpt) <= 300
    if result.kind is Kind.ALREADY_PENDING:
        assert status == 429
        assert complete


_QUOTA_WORDS = ["quota", "Quota exceeded", "rate limit", "RATE_LIMIT_EXCEEDED", "QuotaFailure"]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 60_000),
    st.integers(0, 60_000),
    st.sampled_from(_QUOTA_WORDS),
)
def test_quota_words_anywhere_in_a_long_message_win_over_pending(
    before: int, after: int, quota: str
) -> None:
    message = "Callback already has a pending request." + "x" * before + quota + "y" * after
    body = error(429, "RESOURCE_EXHAUSTED", message)
    assert classify_response(429, {}, body).kind is Kind.TRANSIENT


@given(st.integers(0, 60_000))
def test_a_cut_body_is_never_taken_as_pending(padding: int) -> None:
    body = error(429, "RESOURCE_EXHAUSTED", PENDING + "x" * padding)
    assert classify_response(429, {}, body, complete=False).kind is Kind.TRANSIENT
    assert classify_response(429, {}, body, complete=True).kind is Kind.ALREADY_PENDING


PENDING = "Callback already has a pending request that has not been consumed yet."


@pytest.mark.parametrize(
    ("status_field", "details", "kind"),
    [
        # The structured reason decides, whatever the message says.
        ("RESOURCE_EXHAUSTED", [_info("CALLBACK_PENDING")], Kind.ALREADY_PENDING),
        ("RESOURCE_EXHAUSTED", [_info("RATE_LIMIT_EXCEEDED")], Kind.TRANSIENT),
        (
            "RESOURCE_EXHAUSTED",
            [{"@type": "type.googleapis.com/google.rpc.QuotaFailure"}],
            Kind.TRANSIENT,
        ),
        # A 429 that is not RESOURCE_EXHAUSTED is not the callback's answer.
        ("UNAVAILABLE", None, Kind.TRANSIENT),
        ("", None, Kind.ALREADY_PENDING),
    ],
)
def test_pending_is_decided_on_structure_first(
    status_field: str, details: list[object] | None, kind: Kind
) -> None:
    body = error(429, status_field, PENDING, details)
    assert classify_response(429, {}, body).kind is kind


@pytest.mark.parametrize("status", [599, 600, 601, 700, 999])
def test_a_status_above_599_is_retried_never_acknowledged(status: int) -> None:
    # RFC 9110 defines 1xx to 5xx; anything else is not an answer the relay can trust.
    result = classify_response(status, {"Retry-After": "3"}, b"")
    assert result.kind is Kind.TRANSIENT
    assert result.status == status
    assert result.retry_after_seconds == 3.0
