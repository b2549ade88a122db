"""The function as functions-framework serves it, against loopback fakes.

Real functions-framework (Flask test client), real google-auth against the
fake metadata server, real requests against the fake Workflows callback API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import flask.testing
import functions_framework
import pytest

from callback_relay.access_token import FAILED_REFRESH_HOLD_SECONDS
from harness import cloudevents as events
from harness.attacker_server import AttackerServer
from harness.fake_metadata_server import FakeMetadataServer
from harness.fake_workflows_api import FakeWorkflowsApi, Fault, google_error, quota_fault

SOURCE = "function/main.py"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def make_client(target: str = "relay", signature: str = "cloudevent") -> flask.testing.FlaskClient:
    app: flask.Flask = functions_framework.create_app(  # type: ignore[no-untyped-call]
        target, SOURCE, signature
    )
    return app.test_client()


@pytest.fixture
def client(relay_env: Callable[..., None]) -> flask.testing.FlaskClient:
    return make_client()


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The JSON lines written to stdout. Lines end in "\n" only, as the relay writes
    them: str.splitlines() would also cut at U+2028, U+2029 or U+0085 in a string."""
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.split("\n") if line.startswith("{")]


def send_binary(
    client: flask.testing.FlaskClient,
    data: bytes | None,
    message_id: str = "1001",
    traceparent: str | None = None,
) -> int:
    headers, body = events.eventarc_binary(data, message_id, traceparent)
    return client.post("/", json=body, headers=headers).status_code


# -- the three trigger shapes ---------------------------------------------


@pytest.mark.parametrize("shape", ["eventarc_binary", "structured", "raw_push"])
def test_each_trigger_shape_resumes_the_execution(
    shape: str,
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    metadata_server: FakeMetadataServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    execution = workflows_api.create_execution()
    url = workflows_api.create_callback(execution)
    data = events.message_data(url, payload={"approved": True, "shape": shape})
    if shape == "eventarc_binary":
        status = send_binary(client, data, "m-1", TRACEPARENT)
    elif shape == "structured":
        status = client.post(
            "/",
            data=json.dumps(events.structured(data, "m-1")),
            content_type="application/cloudevents+json",
        ).status_code
    else:
        status = client.post(events.PUSH_PATH, json=events.raw_push(data, "m-1")).status_code
    assert status == 200

    request = workflows_api.await_callback(url, timeout=2)["http_request"]
    assert request["body"] == {"approved": True, "shape": shape}
    assert request["method"] == "POST"
    assert request["headers"]["Idempotency-Key"] == "m-1"
    call = workflows_api.calls_to(url)[0]
    assert call.bearer_token in metadata_server.issued_tokens

    (line,) = [e for e in log_lines(capsys) if e.get("message_id") == "m-1"]
    assert line["severity"] == "INFO"
    assert line["outcome"] == "delivered"
    assert line["http_status"] == 200
    assert line["attempts"] == 1
    assert line["target"]["execution"] == execution.rsplit("/", 1)[1]
    assert line["latency_ms"] > 0
    if shape == "eventarc_binary":
        assert line["logging.googleapis.com/trace"] == (
            "projects/test-project/traces/0af7651916cd43dd8448eb211c80319c"
        )


def test_bare_url_shorthand(
    client: flask.testing.FlaskClient, workflows_api: FakeWorkflowsApi
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    assert send_binary(client, url.encode()) == 200
    assert workflows_api.await_callback(url, timeout=2)["http_request"]["body"] == {}


def test_raw_push_keeps_the_topic_subscription_attempt_and_attributes(
    client: flask.testing.FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # deploy.sh's push endpoint: FUNCTION_URL/projects/P/topics/T. functions-framework
    # makes the topic the event's source, and drops subscription and deliveryAttempt,
    # which the relay takes back from the body.
    topic = "projects/p-7/topics/approvals"
    push = events.raw_push(
        b"{not json",
        "m-7",
        attributes={"order": "42"},
        subscription="projects/p-7/subscriptions/approvals-push",
        delivery_attempt=3,
    )
    assert client.post(events.push_path(topic), json=push).status_code == 200
    (line,) = log_lines(capsys)
    assert line["outcome"] == "message_rejected"
    assert line["delivery_attempt"] == 3
    assert line["replay"]["source"] == f"//pubsub.googleapis.com/{topic}"
    assert line["replay"]["subscription"] == "projects/p-7/subscriptions/approvals-push"
    assert line["replay"]["attributes"] == {"order": "42"}
    assert line["replay"]["message_id"] == "m-7"


def test_the_delivery_attempt_is_logged_beside_the_other_fields(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The attempt shares the line with the producer's metadata, and with a fail-fast
    # note: neither replaces the other.
    url = workflows_api.create_callback(workflows_api.create_execution())
    delivered = events.message_data(url, payload={}, metadata={"worker": "w-1"})
    refused = events.message_data("https://example.com/cb", colour="red")
    for message_id, data in (("m-9", delivered), ("m-10", refused)):
        push = events.raw_push(data, message_id, delivery_attempt=4)
        assert client.post(events.PUSH_PATH, json=push).status_code == 200
    first, second = log_lines(capsys)
    assert (first["outcome"], first["delivery_attempt"]) == ("delivered", 4)
    assert first["metadata"] == {"worker": "w-1"}
    assert (second["outcome"], second["delivery_attempt"]) == ("message_rejected", 4)
    assert second["fail_fast"].startswith("not attempted")


@pytest.mark.parametrize("shape", ["raw_push", "eventarc_binary"])
def test_the_request_body_is_parsed_once(
    shape: str, relay_env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    # Reading subscription and deliveryAttempt back must not parse the body again:
    # functions-framework's raw-push conversion parsed it, and Flask caches that.
    app: flask.Flask = functions_framework.create_app(  # type: ignore[no-untyped-call]
        "relay", SOURCE, "cloudevent"
    )
    parses: list[object] = []
    loads = app.json.loads

    def counting_loads(data: Any, **kwargs: Any) -> Any:
        parses.append(data)
        return loads(data, **kwargs)

    app.json.loads = counting_loads  # type: ignore[method-assign, assignment]
    client = app.test_client()
    if shape == "raw_push":
        push = events.raw_push(b"{not json", "m-8", delivery_attempt=2)
        assert client.post(events.PUSH_PATH, json=push).status_code == 200
        assert len(parses) == 1
    else:
        assert send_binary(client, b"{not json", "m-8") == 200
        assert parses == []  # the CloudEvents SDK read the body, not Flask
    (line,) = log_lines(capsys)
    assert line["replay"]["subscription"]


def test_raw_push_without_data_is_refused_by_functions_framework(
    client: flask.testing.FlaskClient,
) -> None:
    # functions-framework needs message.data to convert a raw push; it answers
    # 400, so Pub/Sub retries it until the dead-letter policy takes it.
    assert client.post(events.PUSH_PATH, json=events.raw_push(None)).status_code == 400


# -- bad input: acknowledged, logged with what is needed to replay it ------


def test_eventarc_message_without_data_is_acked_with_its_attributes(
    client: flask.testing.FlaskClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    headers, body = events.eventarc_binary(None, "m-2")
    body["message"]["attributes"] = {"order": "42"}
    assert client.post("/", json=body, headers=headers).status_code == 200
    (line,) = log_lines(capsys)
    assert line["severity"] == "ERROR"
    assert line["outcome"] == "message_rejected"
    assert line["replay"]["attributes"] == {"order": "42"}
    assert line["replay"]["message_id"] == "m-2"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b'{"callback_url": "x", "colour": "red"}', "unknown_field"),
        (b"\xc3\x28", "not_utf8"),
    ],
)
def test_bad_message_is_acked_and_replayable(
    data: bytes,
    reason: str,
    client: flask.testing.FlaskClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert send_binary(client, data, "bad-1") == 200
    (line,) = log_lines(capsys)
    assert line["severity"] == "ERROR"
    assert line["outcome"] == "message_rejected"
    assert line["reason"].startswith(reason)
    assert base64.b64decode(line["replay"]["data_b64"]) == data
    assert line["replay"]["subscription"].startswith("projects/test-project/subscriptions/")


def test_oversized_message_is_rejected(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay_env(MAX_MESSAGE_BYTES="1024")
    client = make_client()
    url = workflows_api.create_callback(workflows_api.create_execution())
    assert send_binary(client, events.message_data(url, payload="x" * 2000)) == 200
    # The payload is never sent; the waiting step gets the error (tests/system/test_fail_fast.py).
    (call,) = workflows_api.calls
    assert json.loads(call.body)["error"]["details"]["reason"] == "too_large"
    (line,) = log_lines(capsys)
    assert line["outcome"] == "failed_fast"
    assert line["reason"].startswith("too_large")


def test_expired_message_is_not_sent(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    data = events.message_data(url, expires_at="2020-01-01T00:00:00Z")
    assert send_binary(client, data) == 200
    assert workflows_api.calls == []
    (line,) = log_lines(capsys)
    assert (line["severity"], line["outcome"]) == ("WARNING", "expired")
    assert base64.b64decode(line["replay"]["data_b64"]) == data


# -- what the callback answers ---------------------------------------------


def test_ended_execution_404_is_acked_with_a_warning(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    execution = workflows_api.create_execution()
    url = workflows_api.create_callback(execution)
    workflows_api.end_execution(execution)
    assert send_binary(client, events.message_data(url)) == 200
    (line,) = log_lines(capsys)
    assert (line["severity"], line["outcome"], line["http_status"]) == (
        "WARNING",
        "execution_gone",
        404,
    )


def test_duplicate_delivery_gets_pending_429_and_is_acked(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    data = events.message_data(url, payload={"n": 1})
    assert send_binary(client, data, "dup") == 200
    assert send_binary(client, data, "dup") == 200
    first, second = log_lines(capsys)
    assert first["outcome"] == "delivered"
    assert (second["outcome"], second["http_status"], second["severity"]) == (
        "already_pending",
        429,
        "WARNING",
    )
    assert workflows_api.await_callback(url, timeout=1)["http_request"]["body"] == {"n": 1}


def test_transient_failures_are_retried_in_process(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.faults.extend(
        [
            Fault(503, google_error(503, "UNAVAILABLE", "try later")),
            Fault(reset=True),
            Fault(500),
        ]
    )
    assert send_binary(client, events.message_data(url)) == 200
    assert [c.status for c in workflows_api.calls] == [503, -1, 500, 200]
    assert len({c.idempotency_key for c in workflows_api.calls}) == 1
    (line,) = log_lines(capsys)
    assert (line["outcome"], line["attempts"]) == ("delivered", 4)


def test_quota_429_honours_retry_after(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.faults.append(quota_fault(retry_after=1))
    assert send_binary(client, events.message_data(url)) == 200
    first, second = workflows_api.calls
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.received_at >= 0.95


def test_lasting_failure_asks_pubsub_to_redeliver(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.fault_picker = lambda call: Fault(
        403, google_error(403, "PERMISSION_DENIED", "Permission 'workflows.callbacks.send' denied")
    )
    started = time.monotonic()
    assert send_binary(client, events.message_data(url), "m-403") == 503
    assert time.monotonic() - started < 4  # the 2 s deadline, not the backoff cap
    assert len(workflows_api.calls) >= 2
    line = next(e for e in log_lines(capsys) if e.get("message_id") == "m-403")
    assert (line["severity"], line["outcome"], line["http_status"]) == (
        "WARNING",
        "redelivery_requested",
        403,
    )


def test_slow_callback_times_out_and_is_redelivered(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay_env(CALLBACK_READ_TIMEOUT_SECONDS="0.2", CALLBACK_RETRY_DEADLINE_SECONDS="1")
    client = make_client()
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.fault_picker = lambda call: Fault(200, delay_seconds=0.5)
    assert send_binary(client, events.message_data(url), "slow") == 503
    # The log says the timeout was retried, then handed back on purpose.
    lines = [e for e in log_lines(capsys) if e.get("message_id") == "slow"]
    assert len(lines) == 1, "no outcome logged: the relay crashed instead of retrying"
    (line,) = lines
    assert (line["severity"], line["outcome"]) == ("WARNING", "redelivery_requested")
    assert "timed out" in line["reason"]
    assert line["attempts"] >= 2
    assert len(workflows_api.calls) == line["attempts"]


def test_permanent_4xx_is_acked_with_an_error(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    execution = workflows_api.create_execution()
    url = workflows_api.create_callback(execution, method="PUT")
    assert send_binary(client, events.message_data(url)) == 200  # POST to a PUT callback
    (line,) = log_lines(capsys)
    assert (line["severity"], line["outcome"], line["http_status"]) == (
        "ERROR",
        "callback_rejected",
        400,
    )
    assert "replay" in line


def test_token_failure_is_transient(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    metadata_server: FakeMetadataServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = make_client()
    url = workflows_api.create_callback(workflows_api.create_execution())
    # 403: google-auth gives up at once (it retries 5xx itself for ~15 s).
    metadata_server.fail_token_requests(1000, status=403)
    try:
        assert send_binary(client, events.message_data(url), "tok") == 503
    finally:
        metadata_server.fail_token_requests(0)
    assert workflows_api.calls == []
    line = next(e for e in log_lines(capsys) if e.get("message_id") == "tok")
    assert line["outcome"] == "redelivery_requested"
    assert "access token" in line["reason"]
    # The redelivery gets a token and goes through. Pub/Sub redelivers no sooner than
    # the subscription's minimum backoff (10 s), long after the relay stops sharing the
    # last failed refresh's answer; a loaded machine can end the first delivery just
    # inside that window, so wait it out as a redelivery would.
    time.sleep(FAILED_REFRESH_HOLD_SECONDS)
    assert send_binary(client, events.message_data(url), "tok") == 200


def test_rejected_token_is_refreshed(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    metadata_server: FakeMetadataServer,
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.faults.append(Fault(401, google_error(401, "UNAUTHENTICATED", "bad token")))
    before = metadata_server.token_requests
    assert send_binary(client, events.message_data(url)) == 200
    first, second = workflows_api.calls
    assert first.status == 401
    assert second.status == 200
    assert metadata_server.token_requests - before == 2
    assert first.bearer_token != second.bearer_token


# -- the token goes nowhere but a genuine callback --------------------------


def hostile_urls(origin: str, attacker_port: int, path: str) -> list[str]:
    host = origin.split("://", 1)[1]
    evil = f"127.0.0.1:{attacker_port}"
    return [
        f"http://{evil}{path}",
        f"http://{host}@{evil}{path}",
        f"http://{host}:x@{evil}{path}",
        f"http://user@{evil}{path}",
        f"http://{host}\\@{evil}{path}",
        f"http://{evil}\\@{host}{path}",
        f"http://{evil}/{host}{path}",
        f"http://{evil}#{host}{path}",
        f"http://{evil}?{host}{path}",
        f"http://{host}%40{evil}{path}",
        f"https://{evil}{path}",
        f"http://localhost:{attacker_port}{path}",
        f"http://127.1:{attacker_port}{path}",
        f"http://[::ffff:127.0.0.1]:{attacker_port}{path}",
        f"http://{evil}{path}\r\nX: y",
        f" http://{evil}{path}",
        f"http://{evil}%2F{path}",
        evil + path,
        f"//{evil}{path}",
        f"http:{evil}{path}",
    ]


def test_hostile_urls_reach_no_one(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    metadata_server: FakeMetadataServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    path = url.split(workflows_api.host, 1)[1]
    with AttackerServer() as attacker:
        urls = hostile_urls(workflows_api.origin, attacker.port, path)
        for i, hostile in enumerate(urls):
            assert send_binary(client, events.message_data(hostile), f"h-{i}") == 200
        # The shorthand form too.
        assert send_binary(client, f"http://127.0.0.1:{attacker.port}{path}".encode()) == 200
        time.sleep(0.2)
        assert attacker.received == []
    assert workflows_api.calls == []
    lines = log_lines(capsys)
    assert len(lines) == len(urls) + 1
    assert {e["outcome"] for e in lines} == {"url_refused"}
    assert all(e["severity"] == "ERROR" and e["replay"]["data_b64"] for e in lines)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_never_followed(
    status: int,
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    with AttackerServer() as attacker:
        workflows_api.faults.append(
            Fault(status, headers={"Location": f"http://127.0.0.1:{attacker.port}/steal"})
        )
        assert send_binary(client, events.message_data(url)) == 200
        time.sleep(0.2)
        assert attacker.received == []
    (line,) = log_lines(capsys)
    assert (line["outcome"], line["http_status"]) == ("callback_rejected", status)


def test_allowed_workflows_limits_the_targets(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay_env(ALLOWED_WORKFLOWS="projects/test-project/locations/*/workflows/allowed")
    client = make_client()
    other = workflows_api.create_callback(workflows_api.create_execution("other"))
    allowed = workflows_api.create_callback(workflows_api.create_execution("allowed"))
    assert send_binary(client, events.message_data(other), "o") == 200
    assert send_binary(client, events.message_data(allowed), "a") == 200
    assert [c.path for c in workflows_api.calls] == [allowed.split(workflows_api.host)[1]]
    refused, delivered = log_lines(capsys)
    assert refused["outcome"] == "url_refused"
    assert "workflow_not_allowed" in refused["reason"]
    assert delivered["outcome"] == "delivered"


def test_no_token_is_ever_logged(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    metadata_server: FakeMetadataServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.faults.extend([Fault(401), Fault(503), Fault(400)])
    send_binary(client, events.message_data(url))
    send_binary(client, events.message_data(url))
    out, err = capfd.readouterr()
    assert metadata_server.issued_tokens
    for token in metadata_server.issued_tokens:
        assert token not in out
        assert token not in err
        assert token.split("-", 2)[-1] not in out + err


# -- relay_http ---------------------------------------------------------------


@pytest.fixture
def http_client(relay_env: Callable[..., None]) -> flask.testing.FlaskClient:
    return make_client("relay_http", "http")


def test_http_query_form(
    http_client: flask.testing.FlaskClient, workflows_api: FakeWorkflowsApi
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    reply = http_client.post("/", query_string={"callback_url": url})
    assert reply.status_code == 200
    assert reply.json == {
        "outcome": "delivered",
        "reason": "callback received",
        "callback_status": 200,
        "attempts": 1,
    }
    assert workflows_api.await_callback(url, 1)["http_request"]["body"] == {}


def test_http_body_form_with_idempotency_key(
    http_client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    reply = http_client.post(
        "/", data=events.message_data(url, payload=[1, 2]), headers={"Idempotency-Key": "k-9"}
    )
    assert reply.status_code == 200
    request = workflows_api.await_callback(url, 1)["http_request"]
    assert (request["body"], request["headers"]["Idempotency-Key"]) == ([1, 2], "k-9")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{oops", 400),
        (b"", 400),
        (b'{"callback_url": "x", "method": "TRACE"}', 422),
        (b'{"callback_url": "https://evil.example/v1/x"}', 403),
        (b'{"callback_url": "http://127.0.0.1:1/x"}', 403),
    ],
)
def test_http_bad_input(
    http_client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    body: bytes,
    status: int,
) -> None:
    reply = http_client.post("/", data=body)
    assert reply.status_code == status
    assert reply.json
    assert reply.json["reason"]
    assert workflows_api.calls == []


def test_http_callback_failures(
    http_client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
) -> None:
    execution = workflows_api.create_execution()
    url = workflows_api.create_callback(execution)
    workflows_api.fault_picker = lambda call: Fault(503)
    reply = http_client.post("/", query_string={"callback_url": url})
    assert reply.status_code == 503
    assert reply.headers["Retry-After"]
    workflows_api.fault_picker = None
    workflows_api.end_execution(execution)
    reply = http_client.post("/", query_string={"callback_url": url})
    assert reply.status_code == 502
    assert reply.json
    assert reply.json["outcome"] == "execution_gone"


# -- issue 9: bugs, trace, ids and sizes ----------------------------------------


def test_a_bug_is_logged_once_and_the_message_kept(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import callback_relay.relay

    def broken(data: bytes, max_bytes: int) -> object:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(callback_relay.relay, "parse_message_data", broken)
    url = workflows_api.create_callback(workflows_api.create_execution())
    data = events.message_data(url)
    # 503: RedeliveryRequested, so Pub/Sub redelivers and then dead-letters it.
    assert send_binary(client, data, "bug-1") == 503
    (line,) = log_lines(capsys)
    assert (line["severity"], line["outcome"]) == ("ERROR", "internal_error")
    assert line["reason"] == "ZeroDivisionError: a bug"
    assert "broken" in line["traceback"]
    assert base64.b64decode(line["replay"]["data_b64"]) == data


def test_a_bug_in_relay_http_is_a_503_not_a_bare_500(
    http_client: flask.testing.FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import callback_relay.relay

    def broken(data: bytes, max_bytes: int) -> object:
        raise KeyError("bug")

    monkeypatch.setattr(callback_relay.relay, "parse_message_data", broken)
    reply = http_client.post("/", data=b"{}")
    assert reply.status_code == 503
    assert reply.headers["Retry-After"]
    assert reply.json == {
        "outcome": "retry_later",
        "cause": "internal_error",
        "reason": "internal error (KeyError); the message is kept for redelivery",
    }


def test_the_request_trace_header_wins_and_the_event_trace_is_the_producer(
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    headers, body = events.eventarc_binary(events.message_data(url), "t-1", TRACEPARENT)
    headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert client.post("/", json=body, headers=headers).status_code == 200
    (line,) = log_lines(capsys)
    assert line["logging.googleapis.com/trace"] == (
        "projects/test-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert line["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
    assert line["producer_trace"] == (
        "projects/test-project/traces/0af7651916cd43dd8448eb211c80319c"
    )


def test_relay_http_reads_x_cloud_trace_context(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay_env(GOOGLE_CLOUD_PROJECT="proj")
    http = make_client("relay_http", "http")
    url = workflows_api.create_callback(workflows_api.create_execution())
    trace = "105445aa7843bc8bf206b12000100000/1;o=1"
    reply = http.post(
        "/", query_string={"callback_url": url}, headers={"X-Cloud-Trace-Context": trace}
    )
    assert reply.status_code == 200
    (line,) = log_lines(capsys)
    assert line["logging.googleapis.com/trace"] == (
        "projects/proj/traces/105445aa7843bc8bf206b12000100000"
    )
    assert line["logging.googleapis.com/spanId"] == "0000000000000001"


@pytest.mark.parametrize("message_id", ["x\r\nX-Injected: 1", "идентификатор", "7" * 200_000])
def test_an_id_that_is_no_header_value_is_sent_as_its_digest(
    message_id: str,
    client: flask.testing.FlaskClient,
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    headers, body = events.eventarc_binary(events.message_data(url), "ce-1")
    body["message"].update(messageId=message_id, message_id=message_id)
    assert client.post("/", json=body, headers=headers).status_code == 200
    (call,) = workflows_api.calls
    digest = hashlib.sha256(message_id.encode()).hexdigest()
    assert call.idempotency_key == f"sha256-{digest}"
    assert "X-Injected" not in call.headers
    (line,) = log_lines(capsys)
    assert line["outcome"] == "delivered"


def test_a_10_mb_message_leaves_one_bounded_line_that_finds_it_again(
    client: flask.testing.FlaskClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = b"x" * 10_000_000
    assert send_binary(client, data, "big-1") == 200
    out = capsys.readouterr().out
    (raw,) = [line for line in out.split("\n") if line]
    assert len(raw.encode()) < 64 * 1024
    line = json.loads(raw)
    assert line["outcome"] == "message_rejected"
    # The record could not fit, so it was never encoded: the summary is logged in its place.
    assert line["replay"] == {
        "truncated": True,
        "message_id": "big-1",
        "publish_time": events.PUBLISH_TIME,
        "subscription": events.SUBSCRIPTION,
        "source": events.SOURCE,
        "data_bytes": len(data),
        "data_sha256": hashlib.sha256(data).hexdigest(),
    }
