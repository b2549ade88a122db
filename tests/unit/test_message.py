from __future__ import annotations

import datetime
import json
import pathlib
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callback_relay.errors import MessageRejected
from callback_relay.message import (
    CALLBACK_METHODS,
    FAIL_FAST_MAX_BYTES,
    RFC3339_PATTERN,
    CallbackMessage,
    ReplyTo,
    fail_fast_target,
    parse_message_data,
    parse_rfc3339,
)

SCHEMA = json.loads(
    (pathlib.Path(__file__).parents[2] / "schemas" / "callback-message.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/p/locations/us-central1"
    "/workflows/w/executions/e/callbacks/c"
)
LIMIT = 65536


def parse(value: object) -> CallbackMessage:
    return parse_message_data(json.dumps(value).encode(), LIMIT)


def test_full_message() -> None:
    message = parse(
        {
            "callback_url": URL,
            "payload": {"approved": True, "by": "ana"},
            "method": "PUT",
            "expires_at": "2030-01-02T03:04:05.123456789Z",
        }
    )
    assert message.callback_url == URL
    assert message.method == "PUT"
    assert json.loads(message.body or b"") == {"approved": True, "by": "ana"}
    assert message.expires_at == datetime.datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC)


def test_defaults_are_post_and_empty_object() -> None:
    message = parse({"callback_url": URL})
    assert (message.method, message.body, message.expires_at) == ("POST", b"{}", None)


@pytest.mark.parametrize("data", [URL, f"  {URL}\n", f"\t{URL}\r\n"])
def test_bare_url_shorthand(data: str) -> None:
    message = parse_message_data(data.encode(), LIMIT)
    assert (message.callback_url, message.body, message.method) == (URL, b"{}", "POST")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"\xff\xfe{}", "not_utf8"),
        (b"{", "invalid_json"),
        (b"not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"' + URL.encode() + b'"', "not_an_object"),
        (b"{}", "missing_callback_url"),
        (b'{"callback_url": ""}', "missing_callback_url"),
        (b'{"callback_url": 7}', "missing_callback_url"),
        (b'{"callback_url": "x", "callbackUrl": "y"}', "unknown_field"),
        (b'{"callback_url": "x", "method": "post"}', "invalid_method"),
        (b'{"callback_url": "x", "method": "TRACE"}', "invalid_method"),
        (b'{"callback_url": "x", "expires_at": 5}', "invalid_expires_at"),
        (b'{"callback_url": "x", "expires_at": null}', "invalid_expires_at"),
        (b'{"callback_url": "x", "expires_at": "tomorrow"}', "invalid_expires_at"),
        (b'{"callback_url": "x", "expires_at": "2030-02-30T00:00:00Z"}', "invalid_expires_at"),
        (b'{"callback_url": "x", "expires_at": "2030-01-01T00:00:00"}', "invalid_expires_at"),
        (b'{"callback_url": "x", "payload": NaN}', "not_strict_json"),
        (b'{"callback_url": "x", "payload": Infinity}', "not_strict_json"),
        (b'{"callback_url": "x", "payload": -Infinity}', "not_strict_json"),
        (b'{"callback_url": "x", "payload": 1e400}', "not_strict_json"),
        (b'{"callback_url": "x", "payload": [-1E+999]}', "not_strict_json"),
        (b'{"callback_url": "x", "payload": "\\ud800"}', "not_strict_json"),
        (b'{"callback_url": "x", "payload": {"\\udfff": 1}}', "not_strict_json"),
        (b'{"callback_url": "x", "expires_at": "2030-01-01T00:00:00Z\\n"}', "invalid_expires_at"),
        (b'{"callback_url": "x", "expires_at": "2030-01-01T00:00:60Z"}', "invalid_expires_at"),
        (b'{"callback_url": "x", "expires_at": "2030-01-01T24:00:00Z"}', "invalid_expires_at"),
        (b'{"callback_url": "x", "expires_at": "0000-01-01T00:00:00Z"}', "invalid_expires_at"),
        (b'{"callback_url": "x", "method": "GET", "payload": {"a": 1}}', "payload_not_allowed"),
        (b"[" * 100_000, "invalid_json"),
        (json.dumps({"callback_url": "x" * 2049}).encode(), "invalid_callback_url"),
    ],
)
def test_rejections_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MessageRejected) as caught:
        parse_message_data(data, 1_000_000)
    assert caught.value.reason == reason
    assert caught.value.detail


def test_size_cap_is_checked_before_decoding() -> None:
    data = json.dumps({"callback_url": URL, "payload": "x" * LIMIT}).encode()
    with pytest.raises(MessageRejected) as caught:
        parse_message_data(data, LIMIT)
    assert caught.value.reason == "too_large"
    assert str(len(data)) in caught.value.detail


def test_get_sends_no_body() -> None:
    assert parse({"callback_url": URL, "method": "GET"}).body is None
    assert parse({"callback_url": URL, "method": "HEAD", "payload": {}}).body is None


def test_payload_is_encoded_once_compactly() -> None:
    message = parse({"callback_url": URL, "payload": [1, "é", None]})
    assert message.body == '[1,"é",null]'.encode()


def test_schema_and_parser_share_the_date_pattern() -> None:
    assert SCHEMA["properties"]["expires_at"]["pattern"] == RFC3339_PATTERN
    assert SCHEMA["properties"]["method"]["enum"] == list(CALLBACK_METHODS)


# Text as JSON escapes can make it: lone surrogates included ("\\ud800" decodes to one).
any_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)
strict_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


# RFC 3339 section 5.6 and its edges: lower-case t/z, offsets up to 23:59 and past
# them, impossible dates (Feb 30, month 13, year 0000), second 60 (leap), 24:00,
# fractions past nanoseconds, a trailing newline or space.
rfc3339_edges = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, zone, tail: (
        f"{y:04d}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{zone}{tail}"
    ),
    st.sampled_from([0, 1, 1970, 2000, 2024, 2100, 9999]) | st.integers(0, 9999),
    two(0, 13),
    two(0, 32),
    st.sampled_from(["T", "t", " ", "_"]),
    two(0, 24),
    two(0, 60),
    two(0, 61),
    st.just("") | st.integers(1, 12).map(lambda n: "." + "1" * n),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "+05:60", ""])
    | st.builds(lambda sign, h, m: f"{sign}{h}:{m}", st.sampled_from("+-"), two(0, 25), two(0, 60)),
    st.sampled_from(["", "", "", "", "\n", " "]),
)
valid_dates = st.datetimes(
    min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)
).map(lambda d: d.isoformat(timespec="microseconds") + "Z")
BODY_METHODS = [m for m in CALLBACK_METHODS if m not in ("GET", "HEAD")]


def _drop_get_payload(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("method") in ("GET", "HEAD"):
        message.pop("payload", None)
    return message


# Mostly valid messages: the interesting disagreements are at the edges of valid.
valid_messages = st.fixed_dictionaries(
    {"callback_url": st.just(URL)},
    optional={
        "payload": strict_json_values,
        "method": st.sampled_from(CALLBACK_METHODS),
        "expires_at": st.one_of(valid_dates, valid_dates, valid_dates, rfc3339_edges),
        # The parser accepts metadata; the schema's description of it is added
        # separately, and from then on it is part of the agreement too.
        **(
            {"metadata": st.dictionaries(st.text(max_size=8), strict_json_values, max_size=3)}
            if "metadata" in SCHEMA["properties"]
            else {}
        ),
    },
).map(_drop_get_payload)
mutated_messages = st.builds(
    lambda message, key, value: {**message, key: value},
    valid_messages,
    st.sampled_from(["callback_url", "payload", "method", "expires_at", "extra", "callbackUrl"]),
    json_values | st.sampled_from([URL, "GET", "post", "HEAD", {}]) | rfc3339_edges,
)
candidate_messages = st.one_of(valid_messages, valid_messages, valid_messages, mutated_messages)
FORMAT_VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def strict_json_text(value: object) -> bytes | None:
    """RFC 8259 text for ``value``, or None when it has none (NaN, inf, lone surrogates)."""
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except ValueError:  # UnicodeEncodeError included
        return None


def test_the_format_checker_is_really_checking_dates() -> None:
    # Without rfc3339-validator installed, jsonschema skips date-time silently.
    assert not FORMAT_VALIDATOR.is_valid(
        {"callback_url": URL, "expires_at": "2030-02-30T00:00:00Z"}
    )
    assert FORMAT_VALIDATOR.is_valid({"callback_url": URL, "expires_at": "2030-02-28t00:00:00z"})


@settings(max_examples=300, deadline=None)
@given(candidate_messages)
def test_parser_accepts_exactly_what_the_schema_accepts(candidate: dict[str, object]) -> None:
    # The schema describes JSON documents: a value with no strict JSON text is invalid.
    text = strict_json_text(candidate)
    schema_ok = text is not None and FORMAT_VALIDATOR.is_valid(candidate)
    try:
        parse_message_data(json.dumps(candidate).encode("utf-8", "surrogatepass"), 10_000_000)
        parser_ok = True
    except MessageRejected:
        parser_ok = False
    assert parser_ok == schema_ok, candidate


@settings(max_examples=300, deadline=None)
@given(valid_dates | rfc3339_edges)
def test_dates_agree_with_the_format_checker(value: str) -> None:
    schema_ok = FORMAT_VALIDATOR.is_valid({"callback_url": URL, "expires_at": value})
    try:
        parse_rfc3339(value)
        parser_ok = True
    except MessageRejected:
        parser_ok = False
    assert parser_ok == schema_ok, value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_give_a_message_or_a_clean_rejection(data: bytes) -> None:
    try:
        message = parse_message_data(data, 256)
    except MessageRejected as exc:
        assert exc.reason
        assert exc.detail
    else:
        assert isinstance(message, CallbackMessage)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_gives_a_message_or_a_clean_rejection(value: object) -> None:
    try:
        message = parse_message_data(json.dumps(value).encode(), LIMIT)
    except MessageRejected as exc:
        assert exc.reason
    else:
        assert message.callback_url


def test_metadata_is_any_object_and_is_not_sent() -> None:
    metadata = {"job": "j-1", "nested": {"list": [1, 2.5, None]}}
    message = parse({"callback_url": URL, "payload": {"r": 1}, "metadata": metadata})
    assert message.metadata == metadata
    assert json.loads(message.body or b"") == {"r": 1}
    assert parse({"callback_url": URL, "metadata": {}}).metadata == {}
    assert parse({"callback_url": URL}).metadata is None


@pytest.mark.parametrize("metadata", [None, [], "x", 1, True])
def test_metadata_must_be_an_object(metadata: object) -> None:
    with pytest.raises(MessageRejected) as caught:
        parse({"callback_url": URL, "metadata": metadata})
    assert caught.value.reason == "invalid_metadata"


def test_a_lone_surrogate_anywhere_is_not_strict_json() -> None:
    for data in [
        b'{"callback_url": "x\\ud800"}',
        b'{"callback_url": "x", "metadata": {"k": "\\udc00"}}',
        b'{"callback_url": "x", "\\ud800": 1}',
    ]:
        with pytest.raises(MessageRejected) as caught:
            parse_message_data(data, LIMIT)
        assert caught.value.reason == "not_strict_json"
    # A valid pair is one character, and fine.
    message = parse_message_data(b'{"callback_url": "x", "payload": "\\ud83d\\ude00"}', LIMIT)
    assert message.body == '"\U0001f600"'.encode()


@pytest.mark.parametrize(
    ("data", "target"),
    [
        (json.dumps({"callback_url": URL, "colour": "red"}), ReplyTo(URL, "POST")),
        (json.dumps({"callback_url": URL, "method": "PUT", "x": 1}), ReplyTo(URL, "PUT")),
        (json.dumps({"callback_url": URL, "method": "PATCH"}), ReplyTo(URL, "PATCH")),
        (f'{{"callback_url": "{URL}", "payload": NaN}}', ReplyTo(URL, "POST")),
        (f'{{"callback_url": "{URL}", "payload": "\\ud800"}}', ReplyTo(URL, "POST")),
        (json.dumps({"callback_url": URL, "method": "GET", "payload": 1}), None),
        (json.dumps({"callback_url": URL, "method": "HEAD"}), None),
        (json.dumps({"callback_url": URL, "method": "DELETE"}), None),
        (json.dumps({"callback_url": URL, "method": "OPTIONS"}), None),
        # A method in the wrong case is a typo the callback can still be told about.
        (json.dumps({"callback_url": URL, "method": "post"}), ReplyTo(URL, "POST")),
        (json.dumps({"callback_url": URL, "method": "Patch"}), ReplyTo(URL, "PATCH")),
        (json.dumps({"callback_url": URL, "method": "get", "payload": 1}), None),
        (json.dumps({"callback_url": URL, "method": "delete"}), None),
        (json.dumps({"callback_url": URL, "method": "po\u017ft"}), None),  # long s: upper() is POST
        (json.dumps({"callback_url": URL, "method": "FETCH"}), None),
        (json.dumps({"callback_url": URL, "method": ["POST"]}), None),
        (json.dumps({"callbackUrl": URL}), None),
        (json.dumps({"callback_url": ""}), None),
        (json.dumps({"callback_url": 7}), None),
        (json.dumps({"callback_url": "x" * 2049}), None),
        (json.dumps([URL]), None),
        ("{not json", None),
        (URL, None),  # the shorthand never fails to parse for a reason a producer can fix
        ("[" * 100_000, None),
    ],
)
def test_fail_fast_target(data: str, target: ReplyTo | None) -> None:
    assert fail_fast_target(data.encode("utf-8", "surrogatepass")) == target


def test_fail_fast_target_is_not_read_past_pubsubs_size_limit() -> None:
    data = json.dumps({"callback_url": URL, "payload": "x" * FAIL_FAST_MAX_BYTES}).encode()
    assert fail_fast_target(data) is None
    assert fail_fast_target(b"\xff{}") is None
