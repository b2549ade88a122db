"""End to end on loopback: Pub/Sub emulator -> relay function -> fake Workflows API.

The function runs under functions-framework (gunicorn, 8 threads) as a
subprocess; tokens come from a fake metadata server through the real
google-auth path; the workflow's part is played by harness.demo_driver, which
publishes exactly what workflow.yaml would publish. Every scenario runs on both
delivery paths:

- push: an emulator push subscription to /projects/P/topics/T, converted by
  functions-framework from the raw push body into a CloudEvent; the push goes
  through a recording proxy (harness.recording_proxy) that keeps each answer;
- eventarc: a pull subscription whose messages are POSTed as Eventarc-shaped
  binary CloudEvents (harness.eventarc_forwarder), acked on 2xx, nacked otherwise.

Either way the test sees every delivery and the function's answer, which is the
ack decision: "acknowledged once" is read from that record, never slept on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.demo_driver import FakeWorkflowsControl, Trace, play_workflow, pubsub_delivery
from harness.eventarc_forwarder import EventarcForwarder
from harness.fake_metadata_server import FakeMetadataServer
from harness.fake_workflows_api import FakeWorkflowsApi, Fault
from harness.processes import ManagedProcess
from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import publish, pull
from harness.recording_proxy import RecordingProxy
from harness.relay_function import relay_function
from harness.workflow_message import PublishedMessage, build_published_message
from tools.replay_dead_letters import DeadLetterReplay, Settings, make_clients, preflight

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

PATHS = ["push", "eventarc"]
# Short so that a transient failure reaches Pub/Sub's redelivery within a test.
FUNCTION_ENV = {
    "CALLBACK_RETRY_DEADLINE_SECONDS": "0.3",
    "CALLBACK_CONNECT_TIMEOUT_SECONDS": "1",
    "CALLBACK_READ_TIMEOUT_SECONDS": "2",
}
# Well above the function's own retry deadline, so deliveries stand apart in time.
BACKOFF_SECONDS = 1.5


@dataclasses.dataclass
class Stack:
    emulator: PubSubEmulator
    metadata: FakeMetadataServer
    workflows: FakeWorkflowsApi
    control: FakeWorkflowsControl
    function: ManagedProcess
    function_url: str
    path: str
    topic: str = ""
    subscription: str = ""
    forwarder: EventarcForwarder | None = None
    proxy: RecordingProxy | None = None

    def route(
        self, *, dead_letter_topic: str | None = None, max_delivery_attempts: int | None = None
    ) -> None:
        """Create the relay topic and the subscription that delivers it to the function."""
        topic_id = unique_name("relay")
        self.topic = self.emulator.create_topic(topic_id)
        options: dict[str, Any] = {
            "minimum_backoff_seconds": BACKOFF_SECONDS,
            "maximum_backoff_seconds": BACKOFF_SECONDS,
            "dead_letter_topic": dead_letter_topic,
            "max_delivery_attempts": max_delivery_attempts,
        }
        if self.path == "push":
            self.proxy = RecordingProxy(self.function_url).start()
            endpoint = f"{self.proxy.origin}/{self.topic}"
            self.subscription = self.emulator.create_subscription(
                unique_name("push"), topic_id, push_endpoint=endpoint, **options
            )
        else:
            self.subscription = self.emulator.create_subscription(
                unique_name("pull"), topic_id, **options
            )
            self.forwarder = EventarcForwarder(
                self.emulator.subscriber(), self.subscription, self.topic, self.function_url + "/"
            ).start()

    def play(self, payload: Any, timeout: float = 20.0) -> tuple[dict[str, Any], Trace]:
        publisher = self.emulator.publisher()
        trace = Trace(out=None)
        try:
            result = play_workflow(
                self.control,
                pubsub_delivery(publisher),
                payload=payload,
                timeout=timeout,
                topic=self.topic,
                project=self.emulator.project,
                trace=trace,
            )
        finally:
            publisher.stop()
        return result, trace

    def workflow_message(
        self, callback_url: str, payload: Any, timeout: float = 60.0
    ) -> PublishedMessage:
        return build_published_message(
            callback_url=callback_url,
            payload=payload,
            timeout=timeout,
            now=time.time(),
            topic=self.topic,
            project=self.emulator.project,
        )

    def publish(self, data: bytes, **attributes: str) -> str:
        return publish(self.emulator, self.topic, data, **attributes)

    def deliveries(self) -> list[tuple[float, int]]:
        """(sent at, the function's HTTP status) of every delivery so far."""
        if self.forwarder is not None:
            return [(d.sent_at, d.status) for d in self.forwarder.snapshot()]
        assert self.proxy is not None
        return [(r.received_at, r.status) for r in self.proxy.snapshot()]

    def acked_once(self) -> bool:
        """Exactly one delivery so far, and the function acknowledged it (2xx)."""
        return [200 <= status < 300 for _, status in self.deliveries()] == [True]

    def function_log(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.function.lines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries


@pytest.fixture(params=PATHS)
def stack(
    request: pytest.FixtureRequest, emulator: PubSubEmulator, process_log_dir: Path
) -> Iterator[Stack]:
    with contextlib.ExitStack() as exits:
        metadata = exits.enter_context(FakeMetadataServer())
        workflows = exits.enter_context(FakeWorkflowsApi(token_validator=metadata.is_valid))
        function, url = exits.enter_context(
            relay_function(
                process_log_dir,
                metadata_host=metadata.host,
                workflows_host=workflows.emulator_host,
                extra_env=FUNCTION_ENV,
            )
        )
        built = Stack(
            emulator,
            metadata,
            workflows,
            FakeWorkflowsControl(workflows.host),
            function,
            url,
            request.param,
        )
        try:
            yield built
        finally:
            if built.forwarder is not None:
                built.forwarder.stop()
                built.forwarder.subscriber.close()
            if built.proxy is not None:
                built.proxy.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def outcomes_of(stack: Stack, message_id: str) -> list[str]:
    """The function logs one line per delivery of a message: its outcome."""
    return [
        str(e.get("outcome")) for e in stack.function_log() if e.get("message_id") == message_id
    ]


def delivered_outcomes(stack: Stack, message_id: str) -> list[str]:
    """The outcomes once the "delivered" line is written.

    The workflow resumes when the callback API answers 200; the function writes
    its log line just after reading that answer, so the line can trail the resume.
    """
    logged = wait_until(lambda: "delivered" in outcomes_of(stack, message_id), timeout=5)
    assert logged, stack.function.tail()
    return outcomes_of(stack, message_id)


def max_gap_between_deliveries(stack: Stack) -> float:
    """Longest pause between the starts of consecutive deliveries."""
    starts = sorted(sent_at for sent_at, _ in stack.deliveries())
    return max((b - a for a, b in itertools.pairwise(starts)), default=0.0)


# -- scenarios ------------------------------------------------------------------


def test_happy_path_payload_arrives_in_the_execution(stack: Stack) -> None:
    stack.route()
    payload = {"order": 42, "status": "shipped", "items": ["a", "b"], "note": "ünïcode"}

    result, trace = stack.play(payload)

    assert result["status"] == "RESUMED"
    assert result["body"] == payload
    assert trace.names() == ["callback", "published", "resumed"]
    calls = stack.workflows.calls_to(result["callback_url"])
    # Pub/Sub is at-least-once: a rare duplicate delivery meets 404/429 and is acked.
    assert (calls[0].method, calls[0].status) == ("POST", 200)
    assert all(c.status in (404, 429) for c in calls[1:])
    # The real google-auth path fetched the token from the fake metadata server.
    assert calls[0].bearer_token in stack.metadata.issued_tokens
    assert calls[0].headers.get("Content-Type", "").startswith("application/json")
    outcomes = delivered_outcomes(stack, result["message_id"])
    assert outcomes.count("delivered") == 1
    assert set(outcomes) <= {"delivered", "execution_gone", "already_pending"}
    assert wait_until(lambda: len(stack.deliveries()) >= 1, timeout=5)
    assert stack.acked_once(), stack.deliveries()


@pytest.mark.parametrize(
    "data",
    [b"this is not JSON {", b'{"callback_url": "https://x/cb", "surprise": 1}', b"[1, 2]"],
    ids=["garbage", "unknown-field", "array"],
)
def test_bad_message_is_acknowledged_and_logged(stack: Stack, data: bytes) -> None:
    stack.route()

    message_id = stack.publish(data)

    def rejected() -> list[dict[str, Any]]:
        return [
            e
            for e in stack.function_log()
            if e.get("message_id") == message_id and e.get("outcome") == "message_rejected"
        ]

    assert wait_until(lambda: len(stack.deliveries()) >= 1, timeout=15), stack.function.tail()
    # The function's answer is the ack decision: one delivery, acknowledged.
    assert stack.acked_once(), stack.deliveries()
    assert len(rejected()) == 1
    assert rejected()[0]["severity"] == "ERROR"
    assert stack.workflows.calls == []


def test_transient_failure_is_redelivered_with_backoff(stack: Stack) -> None:
    stack.route()
    outage_ends: list[float] = []

    def outage(call: Any) -> Fault | None:
        # The API is down for 2 s after the first call: longer than the function's
        # own retry deadline, so only Pub/Sub's redelivery can get the message through.
        if not outage_ends:
            outage_ends.append(time.time() + 2.0)
        return Fault(503) if time.time() < outage_ends[0] else None

    stack.workflows.fault_picker = outage

    result, _ = stack.play({"attempt": "eventually"}, timeout=30)

    assert result["status"] == "RESUMED"
    assert result["body"] == {"attempt": "eventually"}
    calls = stack.workflows.calls_to(result["callback_url"])
    assert calls[-1].status == 200
    assert any(c.status == 503 for c in calls)
    outcomes = delivered_outcomes(stack, result["message_id"])
    # Deliveries may overlap (at-least-once), so their log lines need not be in order.
    assert outcomes.count("delivered") == 1
    assert outcomes.count("redelivery_requested") == len(outcomes) - 1 >= 1
    assert wait_until(lambda: len(stack.deliveries()) == len(outcomes), timeout=5)
    statuses = [status for _, status in sorted(stack.deliveries())]
    assert statuses[0] >= 500
    assert sum(200 <= status < 300 for status in statuses) == 1
    # The subscription's retry policy spaced the deliveries out. (The emulator is
    # not exact: its first redelivery after a nack can be immediate.)
    assert max_gap_between_deliveries(stack) >= 0.9 * BACKOFF_SECONDS


def test_poison_message_reaches_the_dead_letter_topic_and_can_be_replayed(
    stack: Stack,
) -> None:
    dead_topic = unique_name("dead")
    stack.emulator.create_topic(dead_topic)
    dead_sub = stack.emulator.create_subscription(unique_name("dead-sub"), dead_topic)
    stack.route(dead_letter_topic=dead_topic, max_delivery_attempts=5)
    execution, callback_url = stack.control.create_execution()
    stack.workflows.fault_picker = lambda call: Fault(503)
    message = stack.workflow_message(callback_url, {"poison": True}, timeout=600)

    message_id = stack.publish(message.data, **message.attributes)
    (dead,) = pull(stack.emulator, dead_sub, expected=1, timeout=60, ack=False)

    assert dead.message.data == message.data
    for name, value in message.attributes.items():
        assert dead.message.attributes[name] == value
    # max_delivery_attempts=5: five deliveries, each asking for redelivery.
    assert outcomes_of(stack, message_id) == ["redelivery_requested"] * 5
    assert max_gap_between_deliveries(stack) >= 0.9 * BACKOFF_SECONDS
    assert [status >= 500 for _, status in stack.deliveries()] == [True] * 5
    if stack.forwarder is not None:
        attempts = [d.delivery_attempt for d in stack.forwarder.snapshot()]
        assert attempts == [1, 2, 3, 4, 5]

    # The outage is over: replaying the dead letter resumes the waiting execution.
    stack.workflows.fault_picker = None
    with pytest.MonkeyPatch.context() as patch:
        for name, value in stack.emulator.env().items():
            patch.setenv(name, value)
        subscriber, publisher = make_clients()
    settings = Settings(dead_sub, stack.topic, max_messages=10, pull_timeout=1.0)
    try:
        preflight(subscriber, publisher, settings)
        report = DeadLetterReplay(subscriber, publisher, settings, progress=io.StringIO()).run()
    finally:
        publisher.transport.close()
        subscriber.transport.close()
    assert (report.count("replayed"), report.failures) == (1, [])
    request = stack.control.await_callback(callback_url, timeout=20)
    assert request is not None
    assert request["http_request"]["body"] == {"poison": True}
    stack.control.end_execution(execution)


def test_late_callback_after_timeout_gets_404_and_is_acknowledged(stack: Stack) -> None:
    stack.route()
    execution, callback_url = stack.control.create_execution()
    assert stack.control.await_callback(callback_url, timeout=0.5) is None
    stack.control.end_execution(execution)  # the execution timed out

    # A producer's late answer, without expires_at: the API answers 404.
    late = json.dumps({"callback_url": callback_url, "payload": {"late": True}}).encode()
    message_id = stack.publish(late)

    assert wait_until(lambda: len(stack.deliveries()) >= 1, timeout=15), stack.function.tail()
    assert stack.acked_once(), stack.deliveries()
    calls = stack.workflows.calls_to(callback_url)
    assert [c.status for c in calls] == [404]
    gone = [e for e in stack.function_log() if e.get("message_id") == message_id]
    assert [e.get("outcome") for e in gone] == ["execution_gone"]
    assert gone[0]["severity"] == "WARNING"


def test_workflow_message_past_its_expiry_is_acknowledged_without_a_call(stack: Stack) -> None:
    stack.route()
    execution, callback_url = stack.control.create_execution()
    result_timeout = 0.5
    message = stack.workflow_message(callback_url, {"too": "late"}, timeout=result_timeout)
    assert stack.control.await_callback(callback_url, timeout=result_timeout) is None
    stack.control.end_execution(execution)

    message_id = stack.publish(message.data, **message.attributes)

    def outcomes() -> list[Any]:
        return [e.get("outcome") for e in stack.function_log() if e.get("message_id") == message_id]

    assert wait_until(lambda: len(stack.deliveries()) >= 1, timeout=15), stack.function.tail()
    assert stack.acked_once(), stack.deliveries()
    assert outcomes() == ["expired"]
    assert stack.workflows.calls_to(callback_url) == []
