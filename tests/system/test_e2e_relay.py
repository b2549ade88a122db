"""End to end on loopback: Pub/Sub emulator -> relay function -> fake Workflows API.

The function runs under functions-framework (gunicorn, 8 threads) as a
subprocess; tokens come from a fake metadata server through the real
google-auth path. The workflow is workflow.yaml itself, executed by the local
interpreter (harness.workflow_interpreter) on the fake's callbacks and the
emulator's publish connector: its own steps publish, await, read the body and
build the result or the CallbackError. Every scenario runs on both delivery paths,
each in the shape deploy.sh's push subscription delivers in production (the raw push
body POSTed to FUNCTION_URL/projects/P/topics/T, which functions-framework converts
into a CloudEvent whose source names the topic):

- push: an emulator push subscription; the push goes through a recording proxy
  (harness.recording_proxy) that keeps each answer;
- forwarded-push: a pull subscription whose messages are POSTed in the same shape,
  with Pub/Sub's deliveryAttempt (harness.eventarc_forwarder), acked on 2xx, nacked
  otherwise: the emulator's own push neither sends deliveryAttempt nor keeps
  retrying when several messages fail at once.

One scenario delivers an Eventarc trigger's CloudEvent instead, as a deployment that
deploy.sh has not yet moved to its push subscription still receives.

Either way the test sees every delivery and the function's answer, which is the
ack decision: "acknowledged once" is read from that record, never slept on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import cloudevents
from harness.demo_driver import Trace, TracedCallbacks, traced_publish
from harness.eventarc_forwarder import EventarcForwarder, Shape
from harness.fake_metadata_server import FakeMetadataServer
from harness.fake_workflows_api import FakeWorkflowsApi, Fault
from harness.processes import ManagedProcess
from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import publish, pull
from harness.recording_proxy import RecordingProxy
from harness.relay_function import relay_function
from harness.workflow_bindings import (
    InProcessCallbacks,
    PublishedMessage,
    PubSubConnector,
    RecordingPublisher,
    WorkflowPublication,
    published_by_workflow,
    run_on_fakes,
)
from harness.workflow_interpreter import ExecutionFailed, LogEntry
from tools.replay_dead_letters import DeadLetterReplay, Settings, make_clients, preflight

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

PATHS = ["push", "forwarded-push"]
# Short so that a transient failure reaches Pub/Sub's redelivery within a test.
FUNCTION_ENV = {
    "CALLBACK_RETRY_DEADLINE_SECONDS": "0.3",
    "CALLBACK_CONNECT_TIMEOUT_SECONDS": "1",
    "CALLBACK_READ_TIMEOUT_SECONDS": "2",
}
# Well above the function's own retry deadline, so deliveries stand apart in time.
BACKOFF_SECONDS = 1.5


class WorkflowRun:
    """One execution of workflow.yaml in a background thread, publishing to the emulator.

    `published()` is the message its publish step sent; `outcome()` its result
    (or the ExecutionFailed it ended with). The trace records the workflow's
    hops: callback created, published, resumed (or timeout).
    """

    def __init__(self, stack: Stack, arguments: dict[str, Any]) -> None:
        self.stack = stack
        self.arguments = arguments
        self.trace = Trace(out=None)
        self.logs: list[LogEntry] = []
        self.recorder: RecordingPublisher | None = None
        self.result: Any = None
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="workflow", daemon=True)

    def start(self) -> WorkflowRun:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with PubSubConnector.connect(self.stack.emulator.address) as connector:
                self.recorder = RecordingPublisher(traced_publish(connector, self.trace))
                self.result = run_on_fakes(
                    arguments=self.arguments,
                    callbacks=TracedCallbacks(InProcessCallbacks(self.stack.workflows), self.trace),
                    publish=self.recorder,
                    project_id=self.stack.emulator.project,
                    log=self.logs.append,
                )
        except BaseException as exc:  # noqa: BLE001 - handed to the test by outcome()
            self.failure = exc

    def published(self, timeout: float = 20.0) -> PublishedMessage:
        assert wait_until(
            lambda: bool(self.recorder and self.recorder.published) or not self.thread.is_alive(),
            timeout,
        )
        assert self.recorder is not None, self.failure
        assert self.recorder.published, self.failure
        return self.recorder.published[0]

    def outcome(self, timeout: float) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the workflow is still waiting after {timeout} s"
        if self.failure is not None:
            raise self.failure
        return self.result


@dataclasses.dataclass
class Stack:
    emulator: PubSubEmulator
    metadata: FakeMetadataServer
    workflows: FakeWorkflowsApi
    function: ManagedProcess
    function_url: str
    path: str
    topic: str = ""
    subscription: str = ""
    forwarder: EventarcForwarder | None = None
    proxy: RecordingProxy | None = None

    def route(
        self,
        *,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int | None = None,
        shape: Shape = "push",
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
                self.emulator.subscriber(),
                self.subscription,
                self.topic,
                self.function_url + "/",
                shape=shape,
            ).start()

    def start_workflow(
        self, payload: Any, timeout: float = 20.0, topic: str | None = None
    ) -> WorkflowRun:
        """workflow.yaml's main, publishing on `topic` (the relay topic by default)."""
        arguments = {"payload": payload, "timeout": timeout, "topic": topic or self.topic}
        return WorkflowRun(self, arguments).start()

    def play(self, payload: Any, timeout: float = 20.0) -> tuple[dict[str, Any], Trace]:
        """Run workflow.yaml to its end: (its result, its hops)."""
        run = self.start_workflow(payload, timeout)
        result = run.outcome(timeout + 30)
        return result, run.trace

    def timed_out_workflow(self, payload: Any, timeout: float) -> WorkflowPublication:
        """The message workflow.yaml publishes, captured, and the run that then timed out.

        Nothing is published: the await times out after `timeout` seconds and the
        execution ends, so the callback URL is one of a finished execution.
        """
        return published_by_workflow(
            {"payload": payload, "timeout": timeout, "topic": self.topic},
            callbacks=InProcessCallbacks(self.workflows),
            project_id=self.emulator.project,
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


@dataclasses.dataclass
class RelayServices:
    metadata: FakeMetadataServer
    workflows: FakeWorkflowsApi
    function: ManagedProcess
    function_url: str


@pytest.fixture(scope="module")
def relay_services(process_log_dir: Path) -> Iterator[RelayServices]:
    """The fakes and one relay function for the whole module: starting functions-framework
    costs about a second of CPU, and every test here used to start its own. Each test
    gets the fake API reset, and routes of its own; a stopped route can no longer reach
    the function (see Stack teardown), so no test sees another's calls."""
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
        # The first delivery fetches the relay's token and opens its connection: done here,
        # so that no test's first delivery races its 0.3 s deadline on a loaded machine.
        gone = (
            f"http://{workflows.emulator_host}/v1/projects/p/locations/l/workflows/w"
            "/executions/warm-up/callbacks/warm-up"
        )
        warm = cloudevents.raw_push(cloudevents.message_data(gone), "warm-up")
        assert requests.post(url, json=warm, timeout=30).ok, function.tail()
        assert [call.status for call in workflows.calls] == [404], function.tail()
        yield RelayServices(metadata, workflows, function, url)


@pytest.fixture(params=PATHS)
def stack(
    request: pytest.FixtureRequest, emulator: PubSubEmulator, relay_services: RelayServices
) -> Iterator[Stack]:
    services = relay_services
    assert services.function.running(), services.function.tail()
    services.workflows.reset()
    built = Stack(
        emulator,
        services.metadata,
        services.workflows,
        services.function,
        services.function_url,
        request.param,
    )
    try:
        yield built
    finally:
        # Both stop only once no delivery is on its way to the function.
        if built.forwarder is not None:
            built.forwarder.stop()
            built.forwarder.subscriber.close()
        if built.proxy is not None:
            built.proxy.stop()
        if built.subscription:
            emulator.delete_subscription(built.subscription)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def lines_of(stack: Stack, message_id: str) -> list[dict[str, Any]]:
    """The function's log lines about a message: one per delivery."""
    return [e for e in stack.function_log() if e.get("message_id") == message_id]


def outcomes_of(stack: Stack, message_id: str) -> list[str]:
    return [str(e.get("outcome")) for e in lines_of(stack, message_id)]


def logged(stack: Stack, message_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The function's log lines for a message, once there are `count` of them.

    The function writes a delivery's line before it answers, but the line reaches this
    process through a pipe: it can trail the answer the proxy or forwarder recorded.
    """
    arrived = wait_until(lambda: len(lines_of(stack, message_id)) >= count, timeout=5)
    assert arrived, stack.function.tail()
    return lines_of(stack, message_id)


def delivered_outcomes(stack: Stack, message_id: str) -> list[str]:
    """The outcomes once the "delivered" line is written.

    The workflow resumes when the callback API answers 200; the function writes
    its log line just after reading that answer, so the line can trail the resume.
    """
    arrived = wait_until(lambda: "delivered" in outcomes_of(stack, message_id), timeout=5)
    assert arrived, stack.function.tail()
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

    assert wait_until(lambda: len(stack.deliveries()) >= 1, timeout=15), stack.function.tail()
    # The function's answer is the ack decision: one delivery, acknowledged.
    assert stack.acked_once(), stack.deliveries()
    (entry,) = logged(stack, message_id)
    assert entry["outcome"] == "message_rejected"
    assert entry["severity"] == "ERROR"
    assert stack.workflows.calls == []
    # functions-framework took the topic from the push path; the relay took the
    # subscription back from the push body, which functions-framework drops.
    assert entry["replay"]["source"] == f"//pubsub.googleapis.com/{stack.topic}"
    assert entry["replay"]["subscription"] == stack.subscription


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
    stack.workflows.fault_picker = lambda call: Fault(503)
    # The workflow waits long enough to outlive five deliveries and the replay.
    run = stack.start_workflow({"poison": True}, timeout=600)
    message = run.published()
    message_id = message.message_id

    (dead,) = pull(stack.emulator, dead_sub, expected=1, timeout=60, ack=False)

    assert dead.message.data == message.data
    for name, value in message.attributes.items():
        assert dead.message.attributes[name] == value
    # max_delivery_attempts=5: five deliveries, each asking for redelivery.
    outcomes = [e.get("outcome") for e in logged(stack, message_id, count=5)]
    assert outcomes == ["redelivery_requested"] * 5
    assert max_gap_between_deliveries(stack) >= 0.9 * BACKOFF_SECONDS
    assert [status >= 500 for _, status in stack.deliveries()] == [True] * 5
    if stack.forwarder is not None:
        attempts = [d.delivery_attempt for d in stack.forwarder.snapshot()]
        assert attempts == [1, 2, 3, 4, 5]
        # The push body's deliveryAttempt reached the log, through functions-framework.
        logged_attempts = [int(e["delivery_attempt"]) for e in lines_of(stack, message_id)]
        assert sorted(logged_attempts) == [1, 2, 3, 4, 5]
    assert run.thread.is_alive(), "the workflow stopped waiting"

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
    result = run.outcome(timeout=30)
    assert result["status"] == "RESUMED"
    assert result["body"] == {"poison": True}
    assert result["message_id"] == message_id  # the workflow's own publish, replayed
    assert result["callback_url"] == message.message["callback_url"]


def test_producer_failing_the_step_on_purpose_ends_the_workflow_in_a_callback_error(
    stack: Stack,
) -> None:
    stack.route()
    # The worker pattern: the workflow publishes its job (with its callback URL) on a
    # jobs topic; a worker, this test, publishes the outcome on the relay topic.
    jobs_topic = stack.emulator.create_topic(unique_name("jobs"))
    jobs_sub = stack.emulator.create_subscription(unique_name("jobs-sub"), jobs_topic)
    run = stack.start_workflow({"job": 7}, timeout=30, topic=jobs_topic)
    (job,) = pull(stack.emulator, jobs_sub, expected=1, timeout=20)
    job_message = json.loads(job.message.data)
    assert job_message["payload"] == {"job": 7}

    error = {"code": "X", "message": "m"}
    worker_message = {
        "callback_url": job_message["callback_url"],
        "method": job_message["method"],
        "expires_at": job_message["expires_at"],
        "payload": {"error": error},
    }
    message_id = stack.publish(json.dumps(worker_message).encode())

    with pytest.raises(ExecutionFailed) as failed:
        run.outcome(timeout=40)
    assert "CallbackError" in failed.value.tags
    assert failed.value.error["code"] == "X"
    assert failed.value.error["message"] == "m"
    assert failed.value.error["callback_url"] == job_message["callback_url"]
    # The relay did its job: one delivery, one callback call, acknowledged.
    assert delivered_outcomes(stack, message_id).count("delivered") == 1
    calls = stack.workflows.calls_to(job_message["callback_url"])
    assert (calls[0].method, calls[0].status) == ("POST", 200)
    assert wait_until(lambda: len(stack.deliveries()) >= 1, timeout=5)
    assert stack.acked_once(), stack.deliveries()
    assert run.trace.names() == ["callback", "published", "resumed"]


def test_late_callback_after_timeout_gets_404_and_is_acknowledged(stack: Stack) -> None:
    stack.route()
    timed_out = stack.timed_out_workflow({"on": "time"}, timeout=0.5)
    assert timed_out.result["status"] == "TIMED_OUT"
    callback_url = timed_out.callback_url

    # A producer's late answer, without expires_at: the API answers 404.
    late = json.dumps({"callback_url": callback_url, "payload": {"late": True}}).encode()
    message_id = stack.publish(late)

    assert wait_until(lambda: len(stack.deliveries()) >= 1, timeout=15), stack.function.tail()
    assert stack.acked_once(), stack.deliveries()
    calls = stack.workflows.calls_to(callback_url)
    assert [c.status for c in calls] == [404]
    gone = logged(stack, message_id)
    assert [e.get("outcome") for e in gone] == ["execution_gone"]
    assert gone[0]["severity"] == "WARNING"


def test_workflow_message_past_its_expiry_is_acknowledged_without_a_call(stack: Stack) -> None:
    stack.route()
    # The exact message workflow.yaml published before its 0.5 s wait timed out.
    timed_out = stack.timed_out_workflow({"too": "late"}, timeout=0.5)
    assert timed_out.result["status"] == "TIMED_OUT"
    assert timed_out.result["expires_at"] == timed_out.published.message["expires_at"]
    message = timed_out.published

    message_id = stack.publish(message.data, **message.attributes)

    assert wait_until(lambda: len(stack.deliveries()) >= 1, timeout=15), stack.function.tail()
    assert stack.acked_once(), stack.deliveries()
    assert [e.get("outcome") for e in logged(stack, message_id)] == ["expired"]
    assert stack.workflows.calls_to(timed_out.callback_url) == []


@pytest.mark.parametrize("stack", ["forwarded-push"], indirect=True)
def test_an_eventarc_trigger_still_delivers(stack: Stack) -> None:
    # A deployment made before deploy.sh's push subscription, until deploy.sh moves it.
    stack.route(shape="eventarc")

    result, _ = stack.play({"via": "eventarc"})

    assert result["status"] == "RESUMED"
    assert result["body"] == {"via": "eventarc"}
    assert delivered_outcomes(stack, result["message_id"]).count("delivered") == 1
    # The forwarder records the function's answer after the workflow has resumed.
    assert wait_until(lambda: len(stack.deliveries()) >= 1, timeout=15), stack.function.tail()
    assert stack.acked_once(), (stack.deliveries(), stack.function.lines())
