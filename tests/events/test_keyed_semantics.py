"""The semantics table of docs/events.md, row by row, on the Firestore emulator.

Each test drives the relay as the function runs it (create_relay from an
environment) with Eventarc-shaped deliveries, the fake Workflows API over HTTP
and tokens from the fake metadata server. Time is moved by hand, never waited out.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import pytest

from callback_relay import correlation
from callback_relay.errors import RedeliveryRequested
from harness.fake_workflows_api import FakeWorkflowsApi, Fault, RecordedCall, google_error
from harness.firestore_emulator import FirestoreEmulator
from tests.events.keyed_relay import KeyedRelay, keyed_relay

pytestmark = pytest.mark.emulator


def payloads(keyed: KeyedRelay, url: str) -> list[Any]:
    return [body["payload"] for body in keyed.resumed_with(url)]


# -- who an event resumes --------------------------------------------------------


def test_one_event_resumes_every_execution_waiting_on_its_key(keyed: KeyedRelay) -> None:
    urls = [keyed.callback() for _ in range(3)]
    other = keyed.callback()
    for url in urls:
        assert keyed.wait(url, "order:42").outcome == "wait_registered"
    keyed.wait(other, "order:43")
    outcome = keyed.event("order:42", {"status": "shipped"}, event_id="ship-42")
    assert outcome.outcome == "event_received"
    for url in urls:
        body = keyed.take(url)
        assert body["payload"] == {"status": "shipped"}
        assert (body["key"], body["source"], body["event_id"]) == ("order:42", "relay", "ship-42")
        assert body["published_at"]
    assert keyed.api.calls_to(other) == []


def test_an_event_before_its_wait_is_not_lost(keyed: KeyedRelay) -> None:
    keyed.event("gs://incoming/report.csv", {"size": 10})
    url = keyed.callback()
    outcome = keyed.wait(url, "gs://incoming/report.csv")
    assert outcome.outcome == "delivered"
    assert keyed.take(url)["payload"] == {"size": 10}


def test_an_event_lives_for_its_ttl_and_not_after(keyed: KeyedRelay) -> None:
    keyed.event("k", {"n": 1}, ttl_seconds=60)
    keyed.clock.advance(59)
    early = keyed.callback()
    assert keyed.wait(early, "k").outcome == "delivered"
    keyed.clock.advance(2)
    late = keyed.callback()
    assert keyed.wait(late, "k").outcome == "wait_registered"
    assert keyed.api.calls_to(late) == []


def test_ttl_zero_resumes_only_those_already_waiting(keyed: KeyedRelay) -> None:
    waiting = keyed.callback()
    keyed.wait(waiting, "k")
    keyed.event("k", {"n": 1}, ttl_seconds=0)
    later = keyed.callback()
    assert keyed.wait(later, "k").outcome == "wait_registered"
    assert payloads(keyed, waiting) == [{"n": 1}]
    assert keyed.api.calls_to(later) == []


def test_event_ttl_seconds_sets_the_default(
    monkeypatch: pytest.MonkeyPatch, workflows_api: FakeWorkflowsApi, firestore: FirestoreEmulator
) -> None:
    keyed = keyed_relay(monkeypatch, workflows_api, firestore, EVENT_TTL_SECONDS="0")
    keyed.event("k", {"n": 1})
    assert keyed.wait(keyed.callback(), "k").outcome == "wait_registered"


# -- at most once per execution; the next event, oldest first -----------------------


def test_an_execution_waiting_again_gets_the_next_event_oldest_first(keyed: KeyedRelay) -> None:
    execution = keyed.execution()
    for n in (1, 2):
        keyed.event("queue", {"n": n})
    received = []
    for _ in range(3):
        url = keyed.callback(execution)
        outcome = keyed.wait(url, "queue")
        received.append(payloads(keyed, url) or outcome.outcome)
    assert received == [[{"n": 1}], [{"n": 2}], "wait_registered"]
    keyed.event("queue", {"n": 3})
    assert payloads(keyed, url) == [{"n": 3}]


def test_two_waiters_of_one_execution_share_an_event_once(keyed: KeyedRelay) -> None:
    execution = keyed.execution()
    first, second = keyed.callback(execution), keyed.callback(execution)
    keyed.wait(first, "k")
    keyed.wait(second, "k")
    keyed.event("k", {"n": 1})
    assert (payloads(keyed, first), payloads(keyed, second)) == ([{"n": 1}], [])
    keyed.event("k", {"n": 2})
    assert payloads(keyed, second) == [{"n": 2}]


# -- duplicates ---------------------------------------------------------------------


def test_a_redelivered_event_resumes_nobody_twice(keyed: KeyedRelay) -> None:
    url = keyed.callback()
    keyed.wait(url, "k")
    data = keyed.event_data("k", {"n": 1})
    assert keyed.deliver(data, "msg-1").outcome == "event_received"
    keyed.take(url)
    assert keyed.deliver(data, "msg-1").outcome == "duplicate"
    assert len(keyed.api.calls_to(url)) == 1


def test_the_same_event_id_twice_resumes_nobody_twice(keyed: KeyedRelay) -> None:
    url = keyed.callback()
    keyed.wait(url, "k")
    keyed.event("k", {"n": 1}, event_id="e-1", ttl_seconds=0)
    later = keyed.callback()
    keyed.wait(later, "k")
    assert keyed.event("k", {"n": 1}, event_id="e-1").outcome == "duplicate"
    assert len(keyed.api.calls_to(url)) == 1
    assert keyed.api.calls_to(later) == []


def test_a_redelivered_wait_is_stored_once_and_never_resumed_twice(keyed: KeyedRelay) -> None:
    url = keyed.callback()
    data = keyed.wait_data(url, "k")
    assert keyed.deliver(data, "w-1").outcome == "wait_registered"
    assert keyed.deliver(data, "w-1").outcome == "duplicate"
    keyed.event("k", {"n": 1})
    assert keyed.deliver(data, "w-1").outcome == "duplicate"
    keyed.event("k", {"n": 2})
    assert payloads(keyed, url) == [{"n": 1}]


def test_a_redelivered_event_recalls_only_the_waiters_it_could_not_confirm(
    monkeypatch: pytest.MonkeyPatch, workflows_api: FakeWorkflowsApi, firestore: FirestoreEmulator
) -> None:
    keyed = keyed_relay(
        monkeypatch, workflows_api, firestore, CALLBACK_RETRY_DEADLINE_SECONDS="0.8"
    )
    fine, flaky = keyed.callback(), keyed.callback()
    keyed.wait(fine, "k")
    keyed.wait(flaky, "k")
    flaky_path = "/" + flaky.split("/", 3)[3]
    down = True

    def picker(call: RecordedCall) -> Fault | None:
        return Fault(503) if down and call.path == flaky_path else None

    keyed.api.fault_picker = picker
    data = keyed.event_data("k", {"n": 1})
    with pytest.raises(RedeliveryRequested):
        keyed.deliver(data, "msg-9")
    assert len(keyed.resumed_with(fine)) == 1
    down = False
    assert keyed.deliver(data, "msg-9").outcome == "duplicate"
    assert len(keyed.resumed_with(fine)) == 1  # not called again
    assert payloads(keyed, flaky) == [{"n": 1}]
    calls = len(keyed.api.calls_to(flaky))
    assert keyed.deliver(data, "msg-9").outcome == "duplicate"  # confirmed: nobody called
    assert len(keyed.api.calls_to(flaky)) == calls


# -- isolation ---------------------------------------------------------------------


def test_a_dead_busy_or_refused_waiter_never_keeps_the_others_waiting(
    monkeypatch: pytest.MonkeyPatch, workflows_api: FakeWorkflowsApi, firestore: FirestoreEmulator
) -> None:
    keyed = keyed_relay(monkeypatch, workflows_api, firestore)
    gone_execution = keyed.execution()
    gone, busy, healthy = keyed.callback(gone_execution), keyed.callback(), keyed.callback()
    refused = keyed.callback(keyed.execution("payroll"))
    for url in (gone, busy, refused, healthy):
        keyed.wait(url, "k")
    keyed.api.end_execution(gone_execution)  # cancelled or crashed: 404
    busy_path = "/" + busy.split("/", 3)[3]
    pending = Fault(429, google_error(429, "RESOURCE_EXHAUSTED", "already has a pending request"))
    keyed.api.fault_picker = lambda call: pending if call.path == busy_path else None
    # The same database, now with ALLOWED_WORKFLOWS: a waiter stored before is refused.
    strict = keyed_relay(
        monkeypatch,
        workflows_api,
        firestore,
        ALLOWED_WORKFLOWS="projects/test-project/locations/*/workflows/orders",
        GOOGLE_CLOUD_PROJECT=keyed.project,
    )
    strict.clock.at = keyed.clock.at
    assert strict.event("k", {"n": 1}).outcome == "event_received"
    assert payloads(keyed, healthy) == [{"n": 1}]
    assert keyed.api.calls_to(refused) == []
    statuses = sorted(c.status or 0 for url in (gone, busy) for c in keyed.api.calls_to(url))
    assert statuses == [404, 429]


# -- expiry and policy -------------------------------------------------------------


def test_a_wait_ends_at_its_expires_at(keyed: KeyedRelay) -> None:
    url = keyed.callback()
    keyed.wait(url, "k")
    keyed.clock.advance(601)  # wait_data expires in 600 s
    keyed.event("k", {"n": 1})
    assert keyed.api.calls_to(url) == []


def test_a_waiter_whose_callback_keeps_failing_is_not_called_after_its_expires_at(
    monkeypatch: pytest.MonkeyPatch, workflows_api: FakeWorkflowsApi, firestore: FirestoreEmulator
) -> None:
    # The retry deadline (10 s) outlasts the wait (1 s): the wait's expiry ends the retries.
    keyed = keyed_relay(monkeypatch, workflows_api, firestore, CALLBACK_RETRY_DEADLINE_SECONDS="10")
    url = keyed.callback()
    expires = datetime.datetime.fromtimestamp(keyed.clock() + 1.0, datetime.UTC)
    keyed.deliver(keyed.wait_data(url, "k", expires_at=expires.isoformat()))
    keyed.api.fault_picker = lambda call: Fault(503)
    event = keyed.event_data("k", {"n": 1})
    started = time.time()
    assert keyed.deliver(event, "event-1").outcome == "event_received"  # acknowledged
    calls = keyed.api.calls_to(url)
    assert len(calls) >= 2, "the callback was retried until the wait expired"
    assert all(c.received_at - started < 1.0 for c in calls), "a call started after expires_at"
    # Final for this waiter: a redelivery of the event calls it no more.
    keyed.api.fault_picker = None
    assert keyed.deliver(event, "event-1").outcome == "duplicate"
    assert len(keyed.api.calls_to(url)) == len(calls)


def test_a_wait_already_expired_is_not_stored(keyed: KeyedRelay) -> None:
    url = keyed.callback()
    data = keyed.wait_data(url, "k", expires_at="2001-01-01T00:00:00Z")
    assert keyed.deliver(data).outcome == "expired"
    keyed.event("k")
    assert keyed.api.calls_to(url) == []


def test_a_refused_url_is_logged_and_never_stored(
    keyed: KeyedRelay, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = "https://evil.example/v1/projects/p/locations/l/workflows/w/executions/e/callbacks/c"
    assert keyed.wait(foreign, "k").outcome == "url_refused"
    assert keyed.firestore.documents(keyed.project, "relay_channels") == []
    assert keyed.firestore.documents(keyed.project, "relay_waits") == []
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["outcome"] for line in lines] == ["url_refused"]
    assert "replay" in lines[0]


def test_allowed_workflows_apply_at_registration(
    monkeypatch: pytest.MonkeyPatch, workflows_api: FakeWorkflowsApi, firestore: FirestoreEmulator
) -> None:
    keyed = keyed_relay(
        monkeypatch,
        workflows_api,
        firestore,
        ALLOWED_WORKFLOWS="projects/test-project/locations/*/workflows/orders",
    )
    url = keyed.callback(keyed.execution("payroll"))
    assert keyed.wait(url, "k").outcome == "url_refused"
    assert keyed.firestore.documents(keyed.project, "relay_channels") == []


# -- bounds --------------------------------------------------------------------------


def error_of(keyed: KeyedRelay, url: str) -> dict[str, Any]:
    return dict(keyed.take(url)["error"])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"key": "k" * 1025}, "key_too_long"),
        ({"key": ""}, "invalid_key"),
        ({"source": "nowhere"}, "unknown_source"),
        ({"key": 5}, "invalid_key"),
        ({"expires_at": None}, "invalid_expires_at"),
        ({"payload": {}}, "unknown_field"),
    ],
)
def test_a_broken_wait_fails_its_step_at_once(
    fields: dict[str, Any], reason: str, keyed: KeyedRelay
) -> None:
    url = keyed.callback()
    data = json.loads(keyed.wait_data(url, "k"))
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}
    assert keyed.deliver(json.dumps(data).encode()).outcome == "failed_fast"
    assert error_of(keyed, url)["details"]["reason"] == reason


def test_a_wait_on_a_bodyless_method_is_rejected(keyed: KeyedRelay) -> None:
    # GET and HEAD carry no body, so neither the event nor the error can reach the step.
    data = json.loads(keyed.wait_data(keyed.callback(), "k", method="GET"))
    outcome = keyed.deliver(json.dumps(data).encode())
    assert (outcome.outcome, outcome.code) == ("message_rejected", "invalid_method")


def test_a_key_of_1024_bytes_is_taken(keyed: KeyedRelay) -> None:
    key = "é" * 512
    url = keyed.callback()
    keyed.wait(url, key)
    keyed.event(key, {"n": 1})
    assert payloads(keyed, url) == [{"n": 1}]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"key": "k" * 1025}, "key_too_long"),
        ({"ttl_seconds": -1}, "invalid_ttl"),
        ({"ttl_seconds": True}, "invalid_ttl"),
        ({"source": "orders-shipped"}, "unknown_field"),
        ({"payload": "x" * 70_000}, "too_large"),
    ],
)
def test_a_broken_event_is_rejected_with_its_reason(
    fields: dict[str, Any], reason: str, keyed: KeyedRelay
) -> None:
    data = {"kind": "event", "key": "k", **fields}
    outcome = keyed.deliver(json.dumps(data).encode())
    assert (outcome.outcome, outcome.code) == ("message_rejected", reason)


def test_an_unknown_kind_fails_fast(keyed: KeyedRelay) -> None:
    url = keyed.callback()
    data = json.dumps({"kind": "signal", "callback_url": url, "key": "k"}).encode()
    assert keyed.deliver(data).outcome == "failed_fast"
    assert error_of(keyed, url)["details"]["reason"] == "unknown_kind"


def test_too_many_waiters_on_one_key(keyed: KeyedRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(correlation, "MAX_WAITERS_PER_KEY", 2)
    for _ in range(2):
        assert keyed.wait(keyed.callback(), "k").outcome == "wait_registered"
    third = keyed.callback()
    assert keyed.wait(third, "k").outcome == "failed_fast"
    assert error_of(keyed, third)["details"]["reason"] == "too_many_waiters"


def test_too_many_buffered_events_on_one_key(
    keyed: KeyedRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(correlation, "MAX_EVENTS_PER_KEY", 2)
    for n in range(2):
        assert keyed.event("k", {"n": n}).outcome == "event_received"
    outcome = keyed.event("k", {"n": 2})
    assert (outcome.outcome, outcome.code) == ("message_rejected", "too_many_events")
    assert keyed.event("k", {"n": 3}, ttl_seconds=0).outcome == "event_received"


def test_keyed_messages_while_keyed_waits_are_off(
    relay_env: Any, workflows_api: FakeWorkflowsApi
) -> None:
    from callback_relay.relay import create_relay
    from callback_relay.trace_context import TraceContext
    from harness import cloudevents

    relay = create_relay({"WORKFLOWS_EMULATOR_HOST": workflows_api.emulator_host})
    url = workflows_api.create_callback(workflows_api.create_execution())
    wait = {"kind": "wait", "callback_url": url, "key": "k", "expires_at": "2099-01-01T00:00:00Z"}
    for data, expected in (
        (wait, "failed_fast"),
        ({"kind": "event", "key": "k"}, "message_rejected"),
    ):
        message = cloudevents.pubsub_message(json.dumps(data).encode(), "m-1")
        outcome = relay.relay_event(
            "m-1", cloudevents.SOURCE, {"message": message}, TraceContext.from_headers({})
        )
        assert (outcome.outcome, outcome.code) == (expected, "keyed_waits_off")
    error = workflows_api.await_callback(url, 1)["http_request"]["body"]["error"]
    assert error["details"]["reason"] == "keyed_waits_off"


# -- Firestore down: transient, nothing acknowledged -------------------------------------


def test_firestore_down_is_transient_and_nothing_is_lost(
    monkeypatch: pytest.MonkeyPatch, workflows_api: FakeWorkflowsApi, firestore: FirestoreEmulator
) -> None:
    from harness.ports import free_port

    down = keyed_relay(
        monkeypatch,
        workflows_api,
        firestore,
        FIRESTORE_EMULATOR_HOST=f"127.0.0.1:{free_port()}",
        CALLBACK_RETRY_DEADLINE_SECONDS="0.3",
    )
    url = down.callback()
    data = down.wait_data(url, "k")
    with pytest.raises(RedeliveryRequested, match="event store unavailable"):
        down.deliver(data, "w-1")
    up = keyed_relay(monkeypatch, workflows_api, firestore)
    assert up.deliver(data, "w-1").outcome == "wait_registered"  # the redelivery
    up.event("k", {"n": 1})
    assert payloads(up, url) == [{"n": 1}]


# -- events from topics you already have -------------------------------------------


EVENT_TOPICS = json.dumps(
    {
        "orders-shipped": "order:{attributes.orderId}",
        "incoming-files": "cloud-storage",
        "orders-paid": {"key": "order:{data.order.id}", "event_id": "{data.paymentId}"},
    }
)


@pytest.fixture
def topics(
    monkeypatch: pytest.MonkeyPatch, workflows_api: FakeWorkflowsApi, firestore: FirestoreEmulator
) -> KeyedRelay:
    return keyed_relay(monkeypatch, workflows_api, firestore, EVENT_TOPICS=EVENT_TOPICS)


def test_an_existing_topic_resumes_a_wait_on_its_source(topics: KeyedRelay) -> None:
    url = topics.callback()
    topics.wait(url, "order:42", source="orders-shipped")
    data = json.dumps({"carrier": "ups"}).encode()
    outcome = topics.deliver(data, "p-1", topic="orders-shipped", attributes={"orderId": "42"})
    assert outcome.outcome == "event_received"
    body = topics.take(url)
    assert body["source"] == "orders-shipped"
    assert body["event_id"] == "p-1"
    assert body["payload"] == {"data": {"carrier": "ups"}, "attributes": {"orderId": "42"}}


def test_cloud_storage_notifications_are_one_event_per_generation(topics: KeyedRelay) -> None:
    attributes = {
        "eventType": "OBJECT_FINALIZE",
        "bucketId": "incoming",
        "objectId": "report.csv",
        "objectGeneration": "1700000000000001",
        "payloadFormat": "JSON_API_V1",
    }
    data = json.dumps({"name": "report.csv", "bucket": "incoming", "size": "10"}).encode()
    first, second = topics.callback(), topics.callback()
    topics.wait(first, "gs://incoming/report.csv", source="incoming-files")
    topics.deliver(data, "n-1", topic="incoming-files", attributes=attributes)
    assert topics.take(first)["event_id"] == "1700000000000001"
    # Cloud Storage publishes at least once: another message for the same generation.
    assert topics.deliver(data, "n-2", topic="incoming-files", attributes=attributes).outcome == (
        "duplicate"
    )
    topics.wait(second, "gs://incoming/report.csv", source="incoming-files")
    assert len(topics.resumed_with(second)) == 1  # the kept event, once


def test_a_relay_topic_event_never_wakes_another_source(topics: KeyedRelay) -> None:
    url = topics.callback()
    topics.wait(url, "order:42", source="orders-shipped")
    topics.event("order:42", {"forged": True})
    assert topics.api.calls_to(url) == []


def test_a_message_the_template_cannot_key_is_rejected_not_failed_fast(topics: KeyedRelay) -> None:
    url = topics.callback()
    data = json.dumps({"callback_url": url}).encode()  # foreign data that looks like ours
    outcome = topics.deliver(data, "p-2", topic="orders-shipped")
    assert (outcome.outcome, outcome.code) == ("message_rejected", "key_template_unresolved")
    assert topics.api.calls_to(url) == []


def test_a_data_template_and_its_event_id(topics: KeyedRelay) -> None:
    url = topics.callback()
    topics.wait(url, "order:7", source="orders-paid")
    data = json.dumps({"order": {"id": 7}, "paymentId": "pay-1"}).encode()
    topics.deliver(data, "p-3", topic="orders-paid")
    assert topics.take(url)["event_id"] == "pay-1"
    assert topics.deliver(data, "p-4", topic="orders-paid").outcome == "duplicate"


def test_an_expired_waiter_never_takes_the_event_from_a_live_one(keyed: KeyedRelay) -> None:
    execution = keyed.execution()
    old, new = keyed.callback(execution), keyed.callback(execution)
    soon = datetime.datetime.fromtimestamp(keyed.clock() + 60, datetime.UTC)
    keyed.deliver(keyed.wait_data(old, "k", expires_at=soon.strftime("%Y-%m-%dT%H:%M:%SZ")))
    keyed.wait(new, "k")  # expires in 600 s
    keyed.clock.advance(100)
    keyed.event("k", {"n": 1})
    assert keyed.api.calls_to(old) == []
    assert payloads(keyed, new) == [{"n": 1}]


def test_a_wait_that_expires_between_its_claim_and_its_call_is_not_called(
    keyed: KeyedRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = keyed.callback()
    keyed.wait(url, "k")
    assert keyed.relay.keyed is not None
    store = keyed.relay.keyed.store
    decide = store.update

    def slow_update(*args: Any, **kwargs: Any) -> Any:
        result = decide(*args, **kwargs)
        keyed.clock.advance(601)  # the wait (600 s) ends right after the claim
        return result

    monkeypatch.setattr(store, "update", slow_update)
    keyed.event("k", {"n": 1})
    assert keyed.api.calls_to(url) == []
