"""Issue 12, fail fast: a broken message resumes its callback with an error at once.

The waiting step receives {"error": {"code": "INVALID_MESSAGE", ...}}, which the
subworkflow in workflow.yaml raises as CallbackError, instead of waiting for its
timeout. Only a callback the URL policy accepts, and only with a method that
carries a body (POST, PUT, PATCH).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import flask.testing
import pytest

from harness import cloudevents as events
from harness.attacker_server import AttackerServer
from harness.fake_workflows_api import FakeWorkflowsApi
from tests.system.test_function_app import log_lines, make_client, send_binary


@pytest.fixture
def client(relay_env: Callable[..., None]) -> flask.testing.FlaskClient:
    return make_client()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"payload": {"ok": True}, "result": 42}, "unknown_field"),
        ({"payloa": {"ok": True}}, "unknown_field"),
        ({"expires_at": 5}, "invalid_expires_at"),
        ({"expires_at": "2030-02-30T00:00:00Z"}, "invalid_expires_at"),
        ({"metadata": ["not", "an", "object"]}, "invalid_metadata"),
    ],
)
def test_a_broken_message_fails_the_waiting_step_at_once(
    fields: dict[str, Any],
    reason: str,
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    data = events.message_data(url, **fields)
    assert send_binary(client, data, "ff-1") == 200
    request = workflows_api.await_callback(url, timeout=2)["http_request"]
    error = request["body"]["error"]
    assert error["code"] == "INVALID_MESSAGE"
    assert reason in error["message"]
    assert error["details"] == {"reason": reason, "message_id": "ff-1"}
    assert request["headers"]["Idempotency-Key"] == "ff-1"
    (line,) = log_lines(capsys)
    assert (line["severity"], line["outcome"]) == ("ERROR", "failed_fast")
    assert line["reason"].startswith(reason)
    assert line["callback_outcome"] == "delivered"
    assert line["http_status"] == 200
    assert base64.b64decode(line["replay"]["data_b64"]) == data


def test_non_strict_json_and_oversized_messages_fail_fast_too(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay_env(MAX_MESSAGE_BYTES="1024")
    client = make_client()
    nan_url = workflows_api.create_callback(workflows_api.create_execution())
    big_url = workflows_api.create_callback(workflows_api.create_execution())
    send_binary(client, f'{{"callback_url": "{nan_url}", "payload": NaN}}'.encode(), "nan")
    send_binary(client, events.message_data(big_url, payload="x" * 5000), "big")
    nan = workflows_api.await_callback(nan_url, 2)["http_request"]["body"]["error"]
    big = workflows_api.await_callback(big_url, 2)["http_request"]["body"]["error"]
    assert nan["details"]["reason"] == "not_strict_json"
    assert big["details"]["reason"] == "too_large"
    assert [e["outcome"] for e in log_lines(capsys)] == ["failed_fast", "failed_fast"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_the_error_uses_the_callbacks_method(
    method: str, client: flask.testing.FlaskClient, workflows_api: FakeWorkflowsApi
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution(), method=method)
    assert send_binary(client, events.message_data(url, method=method, colour="red")) == 200
    request = workflows_api.await_callback(url, 2)["http_request"]
    assert request["method"] == method
    assert request["body"]["error"]["details"]["reason"] == "unknown_field"


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("GET", {"payload": {"a": 1}}),  # a payload on GET: nothing can carry the error
        ("HEAD", {"colour": "red"}),
        ("DELETE", {"colour": "red"}),  # a body on DELETE may be dropped: see message.py
        ("OPTIONS", {"colour": "red"}),
    ],
)
def test_methods_without_a_reliable_body_are_rejected_as_before(
    method: str,
    fields: dict[str, Any],
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution(), method=method)
    assert send_binary(client, events.message_data(url, method=method, **fields)) == 200
    assert workflows_api.calls == []
    (line,) = log_lines(capsys)
    assert line["outcome"] == "message_rejected"
    assert "replay" in line


def test_no_callback_url_means_nothing_to_call(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    data = json.dumps({"callbackUrl": url, "payload": {"ok": True}}).encode()
    assert send_binary(client, data) == 200
    assert workflows_api.calls == []
    (line,) = log_lines(capsys)
    assert line["outcome"] == "message_rejected"
    assert line["reason"].startswith("unknown_field")


def test_a_refused_url_is_never_called(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    path = url.split(workflows_api.host, 1)[1]
    with AttackerServer() as attacker:
        evil = f"http://127.0.0.1:{attacker.port}{path}"
        cases: list[dict[str, Any]] = [{"colour": "red"}, {"payload": float("nan")}]
        for i, fields in enumerate(cases):
            assert send_binary(client, events.message_data(evil, **fields), f"evil-{i}") == 200
        # The deliveries above are synchronous: anything sent has arrived by now.
        assert attacker.received == []
    assert workflows_api.calls == []
    lines = log_lines(capsys)
    assert [e["outcome"] for e in lines] == ["message_rejected", "message_rejected"]
    assert all(e["fail_fast"] == "not attempted: wrong_origin" for e in lines)


def test_allowed_workflows_applies_to_fail_fast(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay_env(ALLOWED_WORKFLOWS="projects/test-project/locations/*/workflows/allowed")
    client = make_client()
    other = workflows_api.create_callback(workflows_api.create_execution("other"))
    assert send_binary(client, events.message_data(other, colour="red")) == 200
    assert workflows_api.calls == []
    (line,) = log_lines(capsys)
    assert line["fail_fast"] == "not attempted: workflow_not_allowed"


def test_fail_fast_can_be_turned_off(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay_env(FAIL_FAST_INVALID_MESSAGES="false")
    client = make_client()
    url = workflows_api.create_callback(workflows_api.create_execution())
    assert send_binary(client, events.message_data(url, colour="red")) == 200
    assert workflows_api.calls == []
    (line,) = log_lines(capsys)
    assert line["outcome"] == "message_rejected"


def test_metadata_is_logged_and_never_sent(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    metadata = {"job": "j-1", "worker": {"lang": "node", "version": 20}}
    assert send_binary(client, events.message_data(url, payload={"r": 1}, metadata=metadata)) == 200
    request = workflows_api.await_callback(url, 2)["http_request"]
    assert request["body"] == {"r": 1}
    (line,) = log_lines(capsys)
    assert (line["outcome"], line["metadata"]) == ("delivered", metadata)


def test_large_metadata_is_logged_as_its_digest(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    assert send_binary(client, events.message_data(url, metadata={"blob": "x" * 10_000})) == 200
    (line,) = log_lines(capsys)
    assert line["metadata"]["truncated"] is True
    assert line["metadata"]["bytes"] > 10_000


def test_relay_http_answers_422_failed_fast(
    relay_env: Callable[..., None], workflows_api: FakeWorkflowsApi
) -> None:
    http = make_client("relay_http", "http")
    url = workflows_api.create_callback(workflows_api.create_execution())
    reply = http.post(
        "/", data=events.message_data(url, colour="red"), headers={"Idempotency-Key": "h-1"}
    )
    assert reply.status_code == 422
    assert reply.json
    assert reply.json["outcome"] == "failed_fast"
    assert reply.json["callback_status"] == 200
    body = workflows_api.await_callback(url, 2)["http_request"]["body"]
    assert body["error"]["details"] == {"reason": "unknown_field", "message_id": "h-1"}
