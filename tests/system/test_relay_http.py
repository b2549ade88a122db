"""Issue 17, items 2 and 3: relay_http takes one message, by POST, and reads no more than it may.

Through functions-framework's test client; the same body limits under the real
server (gunicorn) and a 60 MB chunked body are in test_real_server.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import flask.testing
import pytest

from harness import cloudevents as events
from harness.fake_workflows_api import FakeWorkflowsApi
from tests.system.test_function_app import log_lines, make_client

LIMIT = 1024


@pytest.fixture
def http(relay_env: Callable[..., None]) -> flask.testing.FlaskClient:
    relay_env(MAX_MESSAGE_BYTES=str(LIMIT))
    return make_client("relay_http", "http")


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_only_post_may_resume_a_workflow(
    method: str,
    http: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    reply = http.open("/", method=method, query_string={"callback_url": url})
    assert reply.status_code == 405
    assert reply.headers["Allow"] == "POST"
    assert workflows_api.calls == []
    (line,) = log_lines(capsys)
    assert (line["outcome"], line["reason"][:18]) == ("message_rejected", "method_not_allowed")
    assert line["replay"]["query_callback_urls"] == [url]


def test_a_query_url_and_a_body_that_disagree_call_nothing(
    http: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    in_query = workflows_api.create_callback(workflows_api.create_execution())
    in_body = workflows_api.create_callback(workflows_api.create_execution())
    body = events.message_data(in_body, payload={"approved": True})
    reply = http.post("/", query_string={"callback_url": in_query}, data=body)
    assert reply.status_code == 400
    assert reply.json == {
        "outcome": "message_rejected",
        "reason": "ambiguous_request: the message is given both as ?callback_url= and as the"
        " body; give one",
    }
    assert workflows_api.calls == []
    (line,) = log_lines(capsys)
    assert line["reason"].startswith("ambiguous_request")


def test_the_same_url_in_the_query_and_the_body_is_still_ambiguous(
    http: flask.testing.FlaskClient, workflows_api: FakeWorkflowsApi
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    reply = http.post("/", query_string={"callback_url": url}, data=events.message_data(url))
    assert reply.status_code == 400
    assert workflows_api.calls == []


def test_callback_url_twice_in_the_query_calls_nothing(
    http: flask.testing.FlaskClient, workflows_api: FakeWorkflowsApi
) -> None:
    first = workflows_api.create_callback(workflows_api.create_execution())
    second = workflows_api.create_callback(workflows_api.create_execution())
    reply = http.post("/", query_string=[("callback_url", first), ("callback_url", second)])
    assert reply.status_code == 400
    assert reply.json
    assert reply.json["reason"].startswith("ambiguous_request")
    assert workflows_api.calls == []


def test_the_query_form_takes_a_blank_body(
    http: flask.testing.FlaskClient, workflows_api: FakeWorkflowsApi
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    reply = http.post("/", query_string={"callback_url": url}, data=b" \r\n")
    assert reply.status_code == 200
    assert workflows_api.await_callback(url, 1)["http_request"]["body"] == {}


def body_of(size: int, url: str) -> bytes:
    """A message of exactly ``size`` bytes, padded with spaces (valid JSON)."""
    data = events.message_data(url)
    assert len(data) <= size
    return data + b" " * (size - len(data))


def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_413(
    http: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    assert http.post("/", data=body_of(LIMIT, url)).status_code == 200
    other = workflows_api.create_callback(workflows_api.create_execution())
    reply = http.post("/", data=body_of(LIMIT + 1, other))
    assert reply.status_code == 413
    assert len(workflows_api.calls) == 1  # the first only
    delivered, refused = log_lines(capsys)
    assert delivered["outcome"] == "delivered"
    assert refused["reason"] == f"too_large: the body is {LIMIT + 1} bytes; the limit is {LIMIT}"
    assert refused["replay"]["content_length"] == LIMIT + 1


def test_an_oversized_body_is_refused_before_it_is_read(
    http: flask.testing.FlaskClient, workflows_api: FakeWorkflowsApi
) -> None:
    read: list[int] = []

    class Body:
        """A 4 MB request body that counts what is read of it."""

        left = 4 << 20

        def read(self, size: int = -1) -> bytes:
            size = min(self.left, size if size > 0 else 65536)
            self.left -= size
            read.append(size)
            return b" " * size

        def readline(self, size: int = -1) -> bytes:
            return self.read(size)

    chunked = {"wsgi.input": Body(), "wsgi.input_terminated": True}
    reply = http.post("/", environ_overrides=chunked, headers={"Transfer-Encoding": "chunked"})
    assert reply.status_code == 413
    assert reply.is_streamed  # functions-framework reads the rest only after a buffered answer
    assert sum(read) <= LIMIT + 1
    assert json.loads(reply.get_data())["reason"].startswith("too_large")
    assert workflows_api.calls == []
