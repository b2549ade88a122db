"""Invariants 1-3 of the relay, for generated input, through functions-framework.

For every input and each trigger shape (binary Eventarc, structured CloudEvent,
raw Pub/Sub push) and for ``relay_http``:
1. only ``RedeliveryRequested`` leaves the function, and no input is a bug
   (``internal_error``); relay_http answers a documented status with a JSON body;
2. an acknowledged message leaves exactly one log line with its message id,
   valid UTF-8 JSON of at most 64 KiB;
3. whatever reaches the (fake) Workflows API is strict RFC 8259 JSON.

Exceptions propagate out of the Flask test client (PROPAGATE_EXCEPTIONS), so the
test sees exactly what the function raised instead of a 500.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import flask
import flask.testing
import functions_framework
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callback_relay.errors import RedeliveryRequested
from callback_relay.structured_log import MAX_LINE_BYTES
from harness import cloudevents as events
from harness.fake_metadata_server import FakeMetadataServer
from harness.fake_workflows_api import FakeWorkflowsApi

# About 25 s here: run by scripts/test.sh, not by its --quick loop.
pytestmark = pytest.mark.slow
SOURCE = "function/main.py"
FINAL_OUTCOMES = {
    "delivered",
    "already_pending",
    "execution_gone",
    "callback_rejected",
    "message_rejected",
    "url_refused",
    "expired",
    "failed_fast",
}
HTTP_STATUSES = {200, 400, 403, 413, 422, 502, 503}
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_SURROGATES = re.compile("[\ud800-\udfff]")


@pytest.fixture(scope="module")
def api(metadata_server: FakeMetadataServer) -> Iterator[FakeWorkflowsApi]:
    with FakeWorkflowsApi(token_validator=metadata_server.is_valid) as fake:
        yield fake


@pytest.fixture(scope="module")
def urls(api: FakeWorkflowsApi) -> list[str]:
    execution = api.create_execution()
    return [api.create_callback(execution, method) for method in ("POST", "PUT", "GET")]


def _app(api: FakeWorkflowsApi, target: str, signature: str) -> flask.testing.FlaskClient:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WORKFLOWS_EMULATOR_HOST", api.emulator_host)
        env.setenv("CALLBACK_RETRY_DEADLINE_SECONDS", "2")
        env.setenv("CALLBACK_CONNECT_TIMEOUT_SECONDS", "1")
        env.setenv("CALLBACK_READ_TIMEOUT_SECONDS", "1")
        env.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
        app: flask.Flask = functions_framework.create_app(  # type: ignore[no-untyped-call]
            target, SOURCE, signature
        )
    app.config["PROPAGATE_EXCEPTIONS"] = True
    return app.test_client()


@pytest.fixture(scope="module")
def event_client(api: FakeWorkflowsApi) -> flask.testing.FlaskClient:
    return _app(api, "relay", "cloudevent")


@pytest.fixture(scope="module")
def http_client(api: FakeWorkflowsApi) -> flask.testing.FlaskClient:
    return _app(api, "relay_http", "http")


# -- generated input ------------------------------------------------------------

any_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=10,
)


def message_texts(urls: list[str]) -> st.SearchStrategy[bytes]:
    """Message data: mostly messages for a real callback, with any payload and field."""
    url = st.sampled_from(urls)
    message = st.fixed_dictionaries(
        {"callback_url": url},
        optional={
            "payload": json_values,
            "method": st.sampled_from(["POST", "PUT", "GET", "HEAD", "PATCH", "post", 7]),
            "expires_at": st.sampled_from(["2999-01-01T00:00:00Z", "2000-01-01T00:00:00Z", "x"]),
            "metadata": json_values,
            "payloa": json_values,
        },
    )
    as_json = st.builds(
        lambda value, ascii_only: json.dumps(value, ensure_ascii=ascii_only).encode(
            "utf-8", "surrogatepass"
        ),
        message | json_values,
        st.booleans(),
    )
    escapes = st.builds(
        lambda u, esc: f'{{"callback_url": "{u}", "payload": "{esc}"}}'.encode(),
        url,
        st.sampled_from(["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u0000", "\\ud800\\u0041"]),
    )
    numbers = st.builds(
        lambda u, n: f'{{"callback_url": "{u}", "payload": [{n}]}}'.encode(),
        url,
        st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "1e308", "-0", "1" * 5000]),
    )
    huge = st.builds(
        lambda u, n: json.dumps({"callback_url": u, "payload": "x" * n}).encode(),
        url,
        st.sampled_from([60_000, 70_000, 300_000]),
    )
    deep = st.builds(
        lambda u, depth: (
            f'{{"callback_url": "{u}", "payload": ' + "[" * depth + "]" * depth + "}"
        ).encode(),
        url,
        st.sampled_from([500, 5_000, 30_000]),
    )
    return st.one_of(
        as_json, as_json, escapes, numbers, huge, deep, url.map(str.encode), st.binary()
    )


message_ids = st.text(
    st.characters() | st.characters(categories=["Cs"]), min_size=1, max_size=40
) | st.sampled_from(["1001", "x\r\nX-Injected: 1", "é", "a b", "7" * 200_000])
attributes = st.dictionaries(any_text, any_text | json_values, max_size=4)


# -- checks ---------------------------------------------------------------------


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        yield out


def log_entries(out: io.StringIO) -> list[dict[str, Any]]:
    entries = []
    # Lines end in "\n" only: U+2028 or U+0085 inside a JSON string are text.
    for line in out.getvalue().split("\n")[:-1]:
        data = line.encode("utf-8")  # raises on a lone surrogate: not valid UTF-8
        assert len(data) + 1 <= MAX_LINE_BYTES
        entry = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
        assert isinstance(entry, dict)
        entries.append(entry)
    return entries


def _no_constant(name: str) -> Any:
    raise AssertionError(f"non-strict JSON constant {name}")


def assert_strict_json(body: bytes) -> None:
    text = body.decode("utf-8")  # strict: lone surrogates cannot be encoded
    value = json.loads(text, parse_constant=_no_constant)
    reencoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    reencoded.encode("utf-8")


def expected_id(message_id: str) -> str:
    return _SURROGATES.sub("\ufffd", message_id)


def check_one_delivery(api: FakeWorkflowsApi, call: Any, message_id: str) -> list[dict[str, Any]]:
    """Run ``call``; assert invariants 1-3 and return the log lines."""
    before = len(api.calls)
    raised: BaseException | None = None
    with captured() as out:
        try:
            status = call()
        except RedeliveryRequested as exc:
            raised = exc
            status = None
    entries = log_entries(out)
    assert not [e for e in entries if e.get("outcome") == "internal_error"], entries
    for recorded in api.calls[before:]:
        assert_strict_json(recorded.body) if recorded.body else None
    # The fake is healthy: nothing here is transient, so a redelivery would mean that
    # some input (an id as a header, say) became a transient error retried forever.
    assert raised is None, entries
    if status == 400:
        # functions-framework refused the request before the function ran.
        assert entries == []
        return entries
    assert status == 200
    assert len(entries) == 1, entries
    (entry,) = entries
    assert entry["outcome"] in FINAL_OUTCOMES
    wanted = expected_id(message_id)
    if entry.get("truncated"):
        # Cut, never dropped: at least its first 500 characters remain.
        assert entry["message_id"].startswith(wanted[:500])
    else:
        assert entry["message_id"] == wanted
    return entries


# -- the three trigger shapes ------------------------------------------------------


def post_delivery(
    shape: str,
    client: flask.testing.FlaskClient,
    message: bytes,
    message_id: str,
    attrs: dict[str, Any],
) -> int:
    """Deliver `message` to the relay as `shape` does; the HTTP status."""
    if shape == "eventarc_binary":
        headers, body = events.eventarc_binary(message, "ce-1")
        body["message"].update(messageId=message_id, message_id=message_id, attributes=attrs)
        return client.post("/", data=json.dumps(body), headers=headers).status_code
    if shape == "structured":
        event = events.structured(message, message_id)
        event["data"]["message"].update(messageId=message_id, message_id=message_id)
        event["data"]["message"]["attributes"] = attrs
        return client.post(
            "/", data=json.dumps(event), content_type="application/cloudevents+json"
        ).status_code
    push = events.raw_push(message, message_id)
    push["message"].update(messageId=message_id, message_id=message_id, attributes=attrs)
    return client.post(
        events.PUSH_PATH, data=json.dumps(push), content_type="application/json"
    ).status_code


@pytest.mark.parametrize("shape", ["eventarc_binary", "structured", "raw_push"])
def test_every_trigger_shape_keeps_the_invariants(
    shape: str,
    api: FakeWorkflowsApi,
    urls: list[str],
    event_client: flask.testing.FlaskClient,
) -> None:
    before = len(api.calls)

    @EXAMPLES
    @given(data=st.data(), message_id=message_ids, attrs=attributes)
    def delivery_keeps_the_invariants(
        data: st.DataObject, message_id: str, attrs: dict[str, Any]
    ) -> None:
        message = data.draw(message_texts(urls))
        check_one_delivery(
            api, lambda: post_delivery(shape, event_client, message, message_id, attrs), message_id
        )

    delivery_keeps_the_invariants()
    # Not vacuous: many generated messages got through to the callback API.
    assert len([c for c in api.calls[before:] if c.body]) >= 10

    # A non-ASCII payload goes out as UTF-8 on this path (the generator may draw none).
    payload = {"note": "ünïcode ✓ 😀"}
    message = json.dumps({"callback_url": urls[0], "payload": payload}, ensure_ascii=False)
    before = len(api.calls)
    check_one_delivery(
        api, lambda: post_delivery(shape, event_client, message.encode(), "fixed-1", {}), "fixed-1"
    )
    (sent,) = [c.body for c in api.calls[before:]]
    assert not sent.isascii()
    assert json.loads(sent.decode("utf-8")) == payload


# -- relay_http ------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), min_size=1)


def test_relay_http_answers_a_documented_status(
    api: FakeWorkflowsApi, urls: list[str], http_client: flask.testing.FlaskClient
) -> None:
    first = len(api.calls)

    @EXAMPLES
    @given(data=st.data(), key=header_text, in_query=st.booleans())
    def answer_is_documented(data: st.DataObject, key: str, in_query: bool) -> None:
        message = data.draw(message_texts(urls))
        before = len(api.calls)
        with captured() as out:
            if in_query:
                reply = http_client.post(
                    "/",
                    query_string={"callback_url": message.decode("utf-8", "replace")},
                    headers={"Idempotency-Key": key.strip() or "k"},
                )
            else:
                reply = http_client.post("/", data=message, headers={"Idempotency-Key": key})
        entries = log_entries(out)
        assert reply.status_code in HTTP_STATUSES
        assert reply.is_json
        reply_json = reply.get_json()
        assert reply_json["outcome"]
        assert reply_json["reason"]
        assert len(entries) == 1
        assert entries[0]["outcome"] != "internal_error"
        for recorded in api.calls[before:]:
            if recorded.body:
                assert_strict_json(recorded.body)

    answer_is_documented()
    # Not vacuous: generated requests got through to the callback API.
    assert len(api.calls[first:]) >= 10
