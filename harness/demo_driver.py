"""Execute workflow.yaml against the local fakes and print every hop with its timing.

No Workflows emulator exists, so the workflow runs in the local interpreter
(harness.workflow_interpreter): its own steps create the callback on the fake
Workflows API (through its /_fake/ control API), publish the message, await the
callback, read the body and build the result. Only the bindings are local:

- callbacks: harness.workflow_bindings.HttpCallbacks on --workflows-api;
- publishing: with PUBSUB_EMULATOR_HOST set and --topic/--subscription given, the
  Pub/Sub connector publishes to the emulator, and a forwarder pulls from
  --subscription and POSTs each message to the function as the Pub/Sub push that
  deploy.sh's subscription sends (FUNCTION_URL/projects/P/topics/T, the raw push
  body); without the emulator, each published message is POSTed to the function
  as the same push request, directly.

The bindings are wrapped to record the hops: callback created, published,
delivered, token, callback call, resumed, function answer, and the workflow's own
sys.log entries. Exit status: 0 when the workflow returns (RESUMED), 2 when its
result's status is TIMED_OUT, 1 when the execution fails (a CallbackError, for one).
--workflow runs another file (your copy of the subworkflow): its main gets the
runtime argument {"payload", "timeout", "topic"}, as workflow.yaml's does.

--example worker runs examples/worker/ instead (needs the emulator): its workflow
publishes a job on a jobs topic and waits; examples/worker/worker.py, started here
as its own process, pulls the job, does the work and publishes the result on the
relay topic, from which the forwarder delivers it to the function.
--worker-mode fail makes the worker fail the step on purpose, broken makes it
publish a message with a typo, which the relay fails fast. --worker-command runs
your own worker instead (a shell command line, any language), with
PUBSUB_EMULATOR_HOST, GOOGLE_CLOUD_PROJECT, JOBS_SUBSCRIPTION and RELAY_TOPIC set.

    python -m harness.demo_driver --workflows-api 127.0.0.1:P1 --metadata 127.0.0.1:P2 \
        --function-url http://127.0.0.1:P3/ [--topic T --subscription S] --payload '{...}'
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import requests

from harness.cloudevents import push_path, raw_push, rfc3339
from harness.eventarc_forwarder import Delivery, EventarcForwarder
from harness.processes import ManagedProcess, child_env
from harness.workflow_bindings import (
    DEMO_WORKFLOW,
    WORKFLOW_YAML,
    CallbackControl,
    HttpCallbacks,
    PubSubConnector,
    decode_publish_body,
    run_on_fakes,
)
from harness.workflow_interpreter import ExecutionFailed, LogEntry

Publish = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
REPO = Path(__file__).resolve().parent.parent
WORKER_EXAMPLE = REPO / "examples" / "worker"
WORKER_WORKFLOW = "worker-example"


@dataclasses.dataclass
class Trace:
    """Hops with their time since the start, printed as they happen."""

    out: TextIO | None = sys.stdout
    started: float = dataclasses.field(default_factory=time.time)
    hops: list[tuple[str, float, str]] = dataclasses.field(default_factory=list)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def hop(self, name: str, detail: str, at: float | None = None) -> None:
        offset = ((at if at is not None else time.time()) - self.started) * 1000
        with self._lock:
            self.hops.append((name, offset, detail))
            if self.out is not None:
                print(f"{offset:9.1f} ms  {name:<10} {detail}", file=self.out, flush=True)

    def names(self) -> list[str]:
        with self._lock:
            return [name for name, _, _ in self.hops]

    def summary(self) -> str:
        """The hops in time order (live printing follows arrival order)."""
        with self._lock:
            ordered = sorted(self.hops, key=lambda hop: hop[1])
        return "\n".join(
            f"{offset:9.1f} ms  {name:<10} {detail}" for name, offset, detail in ordered
        )

    def wait_for(self, name: str, count: int, timeout: float) -> bool:
        """Until `count` hops named `name` are recorded (answers can trail the resume)."""
        deadline = time.monotonic() + timeout
        while self.names().count(name) < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True


class TracedCallbacks:
    """The workflow's callback binding, recording "callback" and "resumed" hops."""

    def __init__(self, inner: CallbackControl, trace: Trace) -> None:
        self.inner = inner
        self.trace = trace
        self.urls: list[str] = []

    def create_execution(self, workflow: str) -> str:
        return self.inner.create_execution(workflow)

    def create_callback(self, execution: str, method: str) -> str:
        url = self.inner.create_callback(execution, method)
        self.urls.append(url)
        self.trace.hop("callback", f"created {url} ({method})")
        return url

    def await_callback(self, url: str, timeout: float) -> dict[str, Any] | None:
        request = self.inner.await_callback(url, timeout)
        if request is None:
            self.trace.hop("timeout", f"no callback within {timeout:g} s")
        else:
            body = json.dumps(request["http_request"]["body"], ensure_ascii=False)
            self.trace.hop("resumed", f"body {body[:200]}")
        return request

    def end_execution(self, execution: str) -> None:
        self.inner.end_execution(execution)


def traced_publish(inner: Publish, trace: Trace, how: str = "") -> Publish:
    """The workflow's publish binding, recording a "published" hop per message."""

    def publish(topic: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        response = inner(topic, body)
        for message_id in response.get("messageIds", []):
            trace.hop("published", f"message {message_id} on {topic}{how}")
        return response

    return publish


def traced_log(trace: Trace) -> Callable[[LogEntry], None]:
    """The workflow's sys.log entries, as "workflow" hops."""

    def log(entry: LogEntry) -> None:
        payload = entry.payload
        if isinstance(payload, dict):
            # The callback URL is on the "callback" hop already.
            shown = {k: v for k, v in payload.items() if k != "callback_url"}
            text = json.dumps(shown, ensure_ascii=False)
        else:
            text = str(payload)
        trace.hop("workflow", f"sys.log {entry.severity} {text[:200]}")

    return log


def post_event(
    function_url: str, message_id: str, headers: dict[str, str], event: bytes, trace: Trace
) -> None:
    trace.hop("delivered", f"Pub/Sub push {message_id} -> {function_url}")
    started = time.monotonic()
    reply = requests.post(function_url, data=event, headers=headers, timeout=60)
    trace.hop(
        "function",
        f"answered {reply.status_code} in {(time.monotonic() - started) * 1000:.0f} ms",
    )


def direct_delivery(function_url: str, trace: Trace) -> Publish:
    """No emulator: POST the Pub/Sub push request of each published message to the function."""

    def publish(topic: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        ids = [f"direct-{uuid.uuid4().hex[:12]}" for _ in body.get("messages") or []]
        for message in decode_publish_body(topic, body, ids):
            push = raw_push(
                message.data,
                message.message_id,
                attributes=message.attributes,
                publish_time=rfc3339(datetime.datetime.now(datetime.UTC)),
                subscription=topic.replace("/topics/", "/subscriptions/") + "-direct",
            )
            headers = {"Content-Type": "application/json"}
            url = function_url.rstrip("/") + push_path(topic)

            # The function's answer waits for the callback call, and the workflow
            # awaits it only after publish returns: deliver from a thread.
            threading.Thread(
                target=post_event,
                args=(url, message.message_id, headers, json.dumps(push).encode(), trace),
                daemon=True,
            ).start()
        return {"messageIds": ids}

    return publish


def forwarder_hops(trace: Trace) -> Callable[[Delivery], None]:
    def on_delivery(delivery: Delivery) -> None:
        trace.hop(
            "delivered",
            f"Pub/Sub push for message {delivery.message_id}"
            + (f", attempt {delivery.delivery_attempt}" if delivery.delivery_attempt else ""),
            at=delivery.sent_at,
        )
        trace.hop(
            "function",
            f"answered {delivery.status} in {delivery.seconds * 1000:.0f} ms"
            f" ({'ack' if 200 <= delivery.status < 300 else 'nack'})",
        )

    return on_delivery


def _get_json(origin: str, path: str) -> Any:
    origin = origin if "://" in origin else f"http://{origin}"
    reply = requests.get(f"{origin}{path}", timeout=10)
    reply.raise_for_status()
    return reply.json()


def report_calls(workflows_api: str, callback_url: str, trace: Trace) -> list[dict[str, Any]]:
    """A "callback" hop for every call the fake recorded on this callback URL."""
    path = "/" + callback_url.split("://", 1)[-1].split("/", 1)[-1]
    calls = [c for c in _get_json(workflows_api, "/_fake/calls") if c["path"] == path]
    for call in calls:
        bearer = "with Bearer token" if call["has_bearer"] else "WITHOUT a token"
        trace.hop(
            "callback",
            f"{call['method']} {bearer} -> {call['status']}",
            at=float(call["received_at"]),
        )
    return calls


def token_requests(metadata: str | None) -> int | None:
    if not metadata:
        return None
    try:
        return int(_get_json(metadata, "/_fake/stats")["token_requests"])
    except (requests.RequestException, ValueError, KeyError):
        return None


def describe_failure(error: Any) -> str:
    if isinstance(error, dict):
        tags = ",".join(str(t) for t in error.get("tags") or []) or "error"
        code = f" {error['code']}" if "code" in error else ""
        return f"{tags}{code}: {error.get('message', '')}"
    return str(error)


def worker_env(project: str, subscription: str, relay_topic: str) -> dict[str, str]:
    """What a worker reads: its project, the jobs subscription and the relay topic (short ids)."""
    return child_env(
        {
            "GOOGLE_CLOUD_PROJECT": project,
            "PUBSUB_PROJECT_ID": project,
            "JOBS_SUBSCRIPTION": subscription.rsplit("/", 1)[-1],
            "RELAY_TOPIC": relay_topic.rsplit("/", 1)[-1],
            # The emulator needs no credentials: keep Node's google-auth-library from
            # probing for a metadata server and warning (MetadataLookupWarning).
            "METADATA_SERVER_DETECTION": "none",
        }
    )


def start_worker(
    project: str,
    subscription: str,
    relay_topic: str,
    mode: str,
    log_dir: Path,
    command: str | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """The worker as its own process: examples/worker/worker.py for one job, or `command`.

    `command` is a shell command line (yours: any language), run in `cwd` with
    worker_env(): PUBSUB_EMULATOR_HOST, GOOGLE_CLOUD_PROJECT, JOBS_SUBSCRIPTION, RELAY_TOPIC.
    """
    env = worker_env(project, subscription, relay_topic)
    if command is not None:
        argv = ["bash", "-c", command]
        return ManagedProcess("worker", argv, log_dir / "worker.log", env=env, cwd=cwd).start()
    argv = [
        sys.executable,
        str(WORKER_EXAMPLE / "worker.py"),
        "--project",
        project,
        "--subscription",
        subscription,
        "--relay-topic",
        relay_topic,
        "--max-jobs",
        "1",
        "--idle-timeout",
        "120",
    ]
    if mode != "work":
        argv.append(f"--{mode}")
    return ManagedProcess("worker", argv, log_dir / "worker.log", env=env).start()


def worker_hops(worker: ManagedProcess, trace: Trace) -> None:
    """One "worker" hop per line the worker printed; a JSON line's "at" is its time."""
    for line in worker.lines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            event, at = str(entry["event"]), float(entry.get("at") or time.time())
        except (ValueError, TypeError, KeyError, AttributeError):
            trace.hop("worker", line[:300])
            continue
        fields = {k: v for k, v in entry.items() if k not in ("event", "at")}
        trace.hop("worker", f"{event} {json.dumps(fields, ensure_ascii=False)[:300]}", at=at)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.demo_driver", description=__doc__)
    parser.add_argument("--workflows-api", required=True, help="fake Workflows API host:port")
    parser.add_argument("--metadata", help="fake metadata server host:port (token count)")
    parser.add_argument("--function-url", required=True, help="the relay function's URL")
    parser.add_argument("--topic", help="relay topic (projects/P/topics/T) on the emulator")
    parser.add_argument("--subscription", help="pull subscription the forwarder reads")
    parser.add_argument(
        "--jobs-topic",
        help=f"--example worker: the jobs topic (default projects/P/topics/{WORKER_WORKFLOW}-jobs)",
    )
    parser.add_argument("--project", default=os.environ.get("PUBSUB_PROJECT_ID", "local-project"))
    parser.add_argument("--payload", default='{"greeting": "hello from the local demo"}')
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--workflow", type=Path, default=WORKFLOW_YAML, help="workflow file")
    parser.add_argument(
        "--example", choices=["worker"], help="run examples/worker/: workflow, jobs topic, worker"
    )
    parser.add_argument(
        "--worker-mode",
        choices=["work", "fail", "broken"],
        default="work",
        help="with --example worker: do the work, fail the step, or publish a broken message",
    )
    parser.add_argument(
        "--worker-command",
        metavar="COMMAND",
        help="with --example worker: run this shell command as the worker instead of worker.py",
    )
    parser.add_argument("--worker-cwd", type=Path, help="where --worker-command runs")
    parser.add_argument("--log-dir", type=Path, help="where the worker's log goes")
    args = parser.parse_args(argv)
    payload = json.loads(args.payload)
    trace = Trace()
    callbacks = TracedCallbacks(HttpCallbacks(args.workflows_api), trace)
    tokens_before = token_requests(args.metadata)
    use_pubsub = bool(os.environ.get("PUBSUB_EMULATOR_HOST") and args.topic and args.subscription)
    if args.example and not use_pubsub:
        parser.error(
            "--example worker needs the Pub/Sub emulator (PUBSUB_EMULATOR_HOST) and --topic"
        )
    worker: ManagedProcess | None = None
    workflow, workflow_id = args.workflow, DEMO_WORKFLOW
    arguments: dict[str, Any] = {"payload": payload, "timeout": args.timeout}

    with contextlib.ExitStack() as exits:
        if use_pubsub:
            from google.api_core import exceptions as api_exceptions
            from google.cloud import pubsub_v1

            publisher = pubsub_v1.PublisherClient()
            exits.callback(publisher.stop)
            subscriber = pubsub_v1.SubscriberClient()
            exits.callback(subscriber.close)
            # Idempotent set-up, so that the demo can run against a fresh emulator.
            with contextlib.suppress(api_exceptions.AlreadyExists):
                publisher.create_topic(name=args.topic)
            with contextlib.suppress(api_exceptions.AlreadyExists):
                subscriber.create_subscription(name=args.subscription, topic=args.topic)
            forwarder = EventarcForwarder(
                subscriber,
                args.subscription,
                args.topic,
                args.function_url,
                on_delivery=forwarder_hops(trace),
                shape="push",
            ).start()
            exits.callback(forwarder.stop)
            connector = exits.enter_context(PubSubConnector.connect())
            publish = traced_publish(connector, trace)
            topic = args.topic
            if args.example == "worker":
                # The job goes to the worker, not to the relay: a topic of its own.
                jobs_topic = (
                    args.jobs_topic or f"projects/{args.project}/topics/{WORKER_WORKFLOW}-jobs"
                )
                jobs_subscription = jobs_topic.replace("/topics/", "/subscriptions/")
                with contextlib.suppress(api_exceptions.AlreadyExists):
                    publisher.create_topic(name=jobs_topic)
                with contextlib.suppress(api_exceptions.AlreadyExists):
                    subscriber.create_subscription(name=jobs_subscription, topic=jobs_topic)
                log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="worker-example-"))
                worker = start_worker(
                    args.project,
                    jobs_subscription,
                    args.topic,
                    args.worker_mode,
                    log_dir,
                    args.worker_command,
                    args.worker_cwd,
                )
                exits.callback(worker.stop)
                workflow, workflow_id = WORKER_EXAMPLE / "workflow.yaml", WORKER_WORKFLOW
                arguments = {"job": payload, "timeout": args.timeout, "jobs_topic": jobs_topic}
        else:
            publish = traced_publish(
                direct_delivery(args.function_url, trace),
                trace,
                " (no Pub/Sub: handed straight to the function)",
            )
            topic = args.topic or "workflows-callback-relay"

        trace.started = time.time()  # the clock starts with the workflow, not the set-up
        failure: ExecutionFailed | None = None
        result: Any = None
        try:
            if args.example is None:
                arguments["topic"] = topic
            result = run_on_fakes(
                workflow,
                arguments,
                callbacks=callbacks,
                publish=publish,
                workflow_id=workflow_id,
                project_id=args.project,
                log=traced_log(trace),
            )
        except ExecutionFailed as exc:
            failure = exc
        # The function answers its delivery after the callback call returns.
        expected_answers = 1 if worker is not None else trace.names().count("published")
        trace.wait_for("function", expected_answers, timeout=5)
        if worker is not None:
            # A one-job worker exits by itself; one that keeps pulling is stopped.
            deadline = time.monotonic() + 5
            while worker.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            worker.stop()
            worker_hops(worker, trace)

    calls: list[dict[str, Any]] = []
    for url in callbacks.urls:
        calls += report_calls(args.workflows_api, url, trace)
    tokens_after = token_requests(args.metadata)
    if tokens_before is not None and tokens_after is not None and calls:
        trace.hop(
            "token",
            f"{tokens_after - tokens_before} access-token request(s) to the metadata server"
            " (cached between calls)",
            at=float(calls[0]["received_at"]) - 0.0001,
        )
    print("\n--- every hop, in time order ---")
    print(trace.summary())
    if failure is not None:
        print("--- workflow failed ---")
        print(json.dumps(failure.error, indent=2, ensure_ascii=False))
        print(f"workflow failed: {describe_failure(failure.error)}", file=sys.stderr)
        return 1
    print("--- workflow result ---")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    status = result.get("status") if isinstance(result, dict) else None
    return 2 if status == "TIMED_OUT" else 0


if __name__ == "__main__":
    sys.exit(main())
