"""Play workflow.yaml's part against the local fakes and print every hop with its timing.

No Workflows emulator exists, so this driver does what `await_via_pubsub` does:
it creates an execution and a callback on the fake Workflows API (the fake's
control API stands in for events.create_callback_endpoint / await_callback),
publishes exactly the message workflow.yaml would publish (built from the YAML
by harness.workflow_message), and awaits the callback.

Delivery: with PUBSUB_EMULATOR_HOST set and --topic given, the message goes to
the emulator and an Eventarc-shaped forwarder pulls it from --subscription and
POSTs it to the function; without the emulator it POSTs the same CloudEvent to
the function directly.

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
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import requests

from harness.cloudevents import binary_cloudevent
from harness.eventarc_forwarder import Delivery, EventarcForwarder
from harness.workflow_message import PublishedMessage, build_published_message

DEMO_WORKFLOW = "callback-relay-demo"


class CallbackFailed(RuntimeError):
    """The resumed body carried {"error": {...}}: await_via_pubsub raises CallbackError."""

    def __init__(self, error: Any) -> None:
        details = error if isinstance(error, dict) else {}
        self.code = details.get("code", "UNKNOWN")
        self.error_message = details.get("message", "the producer reported an error")
        super().__init__(f"CallbackError {self.code}: {self.error_message}")


class FakeWorkflowsControl:
    """Client of the fake Workflows API's /_fake/ control endpoints."""

    def __init__(self, host: str, session: requests.Session | None = None) -> None:
        self.origin = host if "://" in host else f"http://{host}"
        self.session = session or requests.Session()

    def _post(self, path: str, body: Any, timeout: float = 10.0) -> requests.Response:
        return self.session.post(f"{self.origin}/_fake/{path}", json=body, timeout=timeout)

    def create_execution(
        self, workflow: str = DEMO_WORKFLOW, method: str = "POST"
    ) -> tuple[str, str]:
        reply = self._post("executions", {"workflow": workflow, "method": method})
        reply.raise_for_status()
        data = reply.json()
        return str(data["execution"]), str(data["callback_url"])

    def await_callback(self, callback_url: str, timeout: float) -> dict[str, Any] | None:
        """The callback request, or None after `timeout` (the workflow's TimeoutError)."""
        reply = self._post(
            "await", {"callback_url": callback_url, "timeout": timeout}, timeout=timeout + 10
        )
        if reply.status_code == 408:
            return None
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def end_execution(self, execution: str) -> None:
        self._post("end", {"execution": execution}).raise_for_status()

    def calls(self) -> list[dict[str, Any]]:
        reply = self.session.get(f"{self.origin}/_fake/calls", timeout=10)
        reply.raise_for_status()
        calls: list[dict[str, Any]] = reply.json()
        return calls


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
        return [name for name, _, _ in self.hops]

    def summary(self) -> str:
        """The hops in time order (live printing follows arrival order)."""
        with self._lock:
            ordered = sorted(self.hops, key=lambda hop: hop[1])
        return "\n".join(
            f"{offset:9.1f} ms  {name:<10} {detail}" for name, offset, detail in ordered
        )


def execution_id(execution: str) -> str:
    return execution.rsplit("/", 1)[-1]


def play_workflow(
    control: FakeWorkflowsControl,
    deliver: Callable[[PublishedMessage], str],
    *,
    payload: Any,
    timeout: float,
    topic: str,
    project: str,
    trace: Trace,
    method: str = "POST",
) -> dict[str, Any]:
    """await_via_pubsub + main, against the fake: returns main's result map."""
    execution, callback_url = control.create_execution(DEMO_WORKFLOW, method)
    trace.hop("callback", f"created {callback_url}")
    started = time.time()
    published = build_published_message(
        callback_url=callback_url,
        payload=payload,
        timeout=timeout,
        now=started,
        topic=topic,
        method=method,
        project=project,
        workflow_id=DEMO_WORKFLOW,
        execution_id=execution_id(execution),
    )
    message_id = deliver(published)
    how = (
        " (no Pub/Sub: handed straight to the function)" if message_id.startswith("direct-") else ""
    )
    trace.hop("published", f"message {message_id} on {published.topic}{how}")
    request = control.await_callback(callback_url, timeout)
    arrived = time.time()
    if request is None:
        # Workflows ends the execution when the error is not caught; later callbacks get 404.
        control.end_execution(execution)
        trace.hop("timeout", f"no callback within {timeout:g} s")
        return {
            "status": "TIMED_OUT",
            "message": f"no callback within {timeout:g} s on {published.topic}",
            "callback_url": callback_url,
            "expires_at": published.message.get("expires_at"),
        }
    body = request["http_request"]["body"]
    trace.hop("resumed", f"body {json.dumps(body)[:200]}")
    control.end_execution(execution)
    if isinstance(body, dict) and body.get("error") is not None:
        raise CallbackFailed(body["error"])
    return {
        "status": "RESUMED",
        "body": body,
        "received_at": datetime.datetime.fromtimestamp(arrived, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        ),
        "waited_seconds": round(arrived - started, 3),
        "callback_url": callback_url,
        "message_id": message_id,
    }


def direct_delivery(function_url: str, trace: Trace) -> Callable[[PublishedMessage], str]:
    """No emulator: POST the Eventarc CloudEvent for this message straight to the function."""

    def deliver(published: PublishedMessage) -> str:
        message_id = f"direct-{uuid.uuid4().hex[:12]}"
        headers, body = binary_cloudevent(
            message_id,
            published.data,
            published.attributes,
            datetime.datetime.now(datetime.UTC),
            published.topic.replace("/topics/", "/subscriptions/") + "-direct",
            published.topic,
        )

        def post() -> None:
            trace.hop("delivered", f"CloudEvent {message_id} -> {function_url}")
            started = time.monotonic()
            reply = requests.post(function_url, data=body, headers=headers, timeout=60)
            trace.hop(
                "function",
                f"answered {reply.status_code} in {(time.monotonic() - started) * 1000:.0f} ms",
            )

        # The function call blocks until the callback is made; the driver must be awaiting.
        threading.Thread(target=post, daemon=True).start()
        return message_id

    return deliver


def pubsub_delivery(publisher: Any) -> Callable[[PublishedMessage], str]:
    def deliver(published: PublishedMessage) -> str:
        future = publisher.publish(published.topic, published.data, **published.attributes)
        return str(future.result(timeout=30))

    return deliver


def report_calls(control: FakeWorkflowsControl, callback_url: str, trace: Trace) -> None:
    path = "/" + callback_url.split("://", 1)[-1].split("/", 1)[-1]
    for call in control.calls():
        if call["path"] == path:
            bearer = "with Bearer token" if call["has_bearer"] else "WITHOUT a token"
            trace.hop(
                "callback",
                f"{call['method']} {bearer} -> {call['status']}",
                at=float(call["received_at"]),
            )


def token_requests(metadata: str | None) -> int | None:
    if not metadata:
        return None
    origin = metadata if "://" in metadata else f"http://{metadata}"
    try:
        reply = requests.get(f"{origin}/_fake/stats", timeout=5)
        return int(reply.json()["token_requests"])
    except (requests.RequestException, ValueError, KeyError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.demo_driver", description=__doc__)
    parser.add_argument("--workflows-api", required=True, help="fake Workflows API host:port")
    parser.add_argument("--metadata", help="fake metadata server host:port (token count)")
    parser.add_argument("--function-url", required=True, help="the relay function's URL")
    parser.add_argument("--topic", help="relay topic (projects/P/topics/T) on the emulator")
    parser.add_argument("--subscription", help="pull subscription the forwarder reads")
    parser.add_argument("--project", default=os.environ.get("PUBSUB_PROJECT_ID", "local-project"))
    parser.add_argument("--payload", default='{"greeting": "hello from the local demo"}')
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    payload = json.loads(args.payload)
    trace = Trace()
    control = FakeWorkflowsControl(args.workflows_api)
    tokens_before = token_requests(args.metadata)
    use_pubsub = bool(os.environ.get("PUBSUB_EMULATOR_HOST") and args.topic and args.subscription)

    forwarder: EventarcForwarder | None = None
    publisher: Any = None
    subscriber: Any = None
    if use_pubsub:
        from google.api_core import exceptions as api_exceptions
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        # Idempotent set-up, so that the demo can run against a fresh emulator.
        with contextlib.suppress(api_exceptions.AlreadyExists):
            publisher.create_topic(name=args.topic)
        with contextlib.suppress(api_exceptions.AlreadyExists):
            subscriber.create_subscription(name=args.subscription, topic=args.topic)

        def on_delivery(delivery: Delivery) -> None:
            trace.hop(
                "delivered",
                f"Eventarc CloudEvent for message {delivery.message_id}"
                + (f", attempt {delivery.delivery_attempt}" if delivery.delivery_attempt else ""),
                at=delivery.sent_at,
            )
            trace.hop(
                "function",
                f"answered {delivery.status} in {delivery.seconds * 1000:.0f} ms"
                f" ({'ack' if 200 <= delivery.status < 300 else 'nack'})",
            )

        forwarder = EventarcForwarder(
            subscriber, args.subscription, args.topic, args.function_url, on_delivery=on_delivery
        ).start()
        deliver = pubsub_delivery(publisher)
        topic = args.topic
    else:
        deliver = direct_delivery(args.function_url, trace)
        topic = args.topic or "workflows-callback-relay"
    trace.started = time.time()  # the clock starts with the workflow, not the set-up
    try:
        result = play_workflow(
            control,
            deliver,
            payload=payload,
            timeout=args.timeout,
            topic=topic,
            project=args.project,
            trace=trace,
        )
        time.sleep(0.3)  # let the function's reply reach the trace
        tokens_after = token_requests(args.metadata)
        calls = [c for c in control.calls() if c["path"] in result["callback_url"]]
        if tokens_before is not None and tokens_after is not None and calls:
            trace.hop(
                "token",
                f"{tokens_after - tokens_before} access-token request(s) to the metadata server"
                " (cached between calls)",
                at=float(calls[0]["received_at"]) - 0.0001,
            )
        report_calls(control, result["callback_url"], trace)
    except CallbackFailed as exc:
        print(f"workflow failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if forwarder is not None:
            forwarder.stop()
        if publisher is not None:
            publisher.stop()
        if subscriber is not None:
            subscriber.close()
    print("\n--- every hop, in time order ---")
    print(trace.summary())
    print("--- workflow result ---")
    print(json.dumps(result, indent=2))
    return 0 if result["status"] == "RESUMED" else 2


if __name__ == "__main__":
    sys.exit(main())
