"""Issue 17, item 1: a message's expires_at holds on every path and before every attempt.

Through functions-framework (the test client), against the fake Workflows API:
a broken message past its expires_at fails nothing fast; a message that expires
while its callback keeps failing is logged ``expired`` and acknowledged, with no
call made after expires_at; and a fail-fast error that cannot be delivered
before the retry deadline is redelivered, never acknowledged.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import flask.testing
import pytest

from harness import cloudevents as events
from harness.fake_metadata_server import FakeMetadataServer
from harness.fake_workflows_api import FakeWorkflowsApi, Fault
from tests.system.test_function_app import log_lines, make_client, send_binary


def rfc3339_in(seconds: float) -> tuple[str, float]:
    """(expires_at as RFC 3339, the same instant on time.time()'s clock)."""
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return events.rfc3339(moment), moment.timestamp()


@pytest.fixture
def client(relay_env: Callable[..., None]) -> flask.testing.FlaskClient:
    relay_env(CALLBACK_RETRY_DEADLINE_SECONDS="5")
    return make_client()


def test_a_broken_message_past_expires_at_calls_nothing(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    expires_at, _ = rfc3339_in(-1)
    data = events.message_data(url, expires_at=expires_at, colour="red")
    assert send_binary(client, data, "late-broken") == 200
    assert workflows_api.calls == []
    (line,) = log_lines(capsys)
    assert (line["severity"], line["outcome"]) == ("ERROR", "message_rejected")
    assert line["reason"].startswith("unknown_field")
    assert line["fail_fast"] == f"not attempted: expired at {_iso(expires_at)}"
    assert "replay" in line


@pytest.mark.parametrize("broken", [False, True])
def test_a_message_that_expires_while_retried_is_final_and_not_called_after(
    broken: bool,
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.fault_picker = lambda call: Fault(503)
    expires_at, expires_ts = rfc3339_in(0.6)
    fields = {"colour": "red"} if broken else {}
    data = events.message_data(url, expires_at=expires_at, **fields)
    started = time.monotonic()
    assert send_binary(client, data, "expiring") == 200  # final: acknowledged
    assert time.monotonic() - started < 1.5  # not the 5 s retry deadline
    assert workflows_api.calls, "the first attempt comes before expires_at"
    assert all(call.received_at < expires_ts for call in workflows_api.calls)
    (line,) = log_lines(capsys)
    assert "replay" in line
    attempts = f"expired at {_iso(expires_at)} after {len(workflows_api.calls)} attempt(s)"
    if broken:
        assert (line["outcome"], line["reason"][:13]) == ("message_rejected", "unknown_field")
        assert line["fail_fast"].startswith(f"not delivered: {attempts}; last: server error 503")
    else:
        assert (line["severity"], line["outcome"]) == ("WARNING", "expired")
        assert line["reason"].startswith(f"{attempts}; last: server error 503")
        assert line["http_status"] == 503


def test_a_fail_fast_error_that_cannot_be_delivered_is_redelivered(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay_env(CALLBACK_RETRY_DEADLINE_SECONDS="1")
    client = make_client()
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.fault_picker = lambda call: Fault(503)
    status = send_binary(client, events.message_data(url, colour="red"), "ff-503")
    assert not 200 <= status < 300  # Pub/Sub redelivers: the error still has to reach the step
    assert len(workflows_api.calls) >= 2
    (line,) = log_lines(capsys)
    assert (line["outcome"], line["rejected"]) == ("redelivery_requested", "unknown_field")


def test_a_fail_fast_error_without_a_token_is_redelivered(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    metadata_server: FakeMetadataServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay_env(CALLBACK_RETRY_DEADLINE_SECONDS="1")
    client = make_client()
    url = workflows_api.create_callback(workflows_api.create_execution())
    metadata_server.fail_token_requests(1000, status=403)
    try:
        status = send_binary(client, events.message_data(url, colour="red"), "ff-tok")
    finally:
        metadata_server.fail_token_requests(0)
    assert not 200 <= status < 300
    assert workflows_api.calls == []
    line = next(e for e in log_lines(capsys) if e.get("message_id") == "ff-tok")
    assert line["outcome"] == "redelivery_requested"
    assert "access token" in line["reason"]


def _iso(rfc3339: str) -> str:
    """expires_at as the relay writes it (datetime.isoformat, UTC)."""
    moment = datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    return moment.isoformat()
