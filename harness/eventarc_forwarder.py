"""Deliver Pub/Sub messages to a function from a pull subscription, shaped as production.

Two shapes (``shape``):

- ``"push"``: what deploy.sh's push subscription sends: the raw push body
  ``{"message": {...}, "subscription": ..., "deliveryAttempt": N}`` POSTed to
  ``TARGET/projects/P/topics/T`` (the topic as the path, which functions-framework
  turns into the event's source). ``deliveryAttempt`` is Pub/Sub's own count from the
  pull, present when the subscription has a dead-letter policy, as on a real push
  (the emulator's own push leaves it out).
- ``"eventarc"``: an Eventarc Pub/Sub trigger's binary-mode CloudEvent: ``ce-*``
  headers (type ``google.cloud.pubsub.topic.v1.messagePublished``, source
  ``//pubsub.googleapis.com/projects/P/topics/T``) and a JSON body
  ``{"message": {data, attributes, messageId, publishTime}, "subscription": ...}``;
  deployments made before the push subscription still have it.

It pulls from a subscription, POSTs each message, and acknowledges on 2xx; otherwise
it nacks, so the subscription's retry policy and dead-letter policy apply, as they do
in production. (The emulator's own push stops retrying when several messages fail at
once, so redelivery is tested through pull.) With ``concurrency`` above 1 it POSTs
from a pool of threads (the soak); in-flight work is bounded, so it stops pulling
while the pool is busy.

    python -m harness.eventarc_forwarder --subscription projects/P/subscriptions/S \
        --topic projects/P/topics/T --target http://127.0.0.1:8080/ [--shape eventarc]

Local use only (emulator via PUBSUB_EMULATOR_HOST).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import requests

from harness.cloudevents import pulled_cloudevent, pulled_push, push_path
from harness.thread_sessions import ThreadSessions

Shape = Literal["eventarc", "push"]


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One POST to the target and how it ended."""

    message_id: str
    delivery_attempt: int
    status: int  # HTTP status, or -1 when the request itself failed
    sent_at: float
    seconds: float


class EventarcForwarder:
    """Pull -> POST CloudEvent -> ack/nack, in background threads until stopped."""

    def __init__(
        self,
        subscriber: Any,
        subscription: str,
        topic: str,
        target_url: str,
        *,
        request_timeout: float = 60.0,
        batch_size: int = 10,
        concurrency: int = 1,
        on_delivery: Callable[[Delivery], None] | None = None,
        keep_deliveries: bool = True,
        shape: Shape = "eventarc",
    ) -> None:
        self.subscriber = subscriber
        self.shape = shape
        self.subscription = subscription
        self.topic = topic
        self.target_url = target_url
        self.request_timeout = request_timeout
        self.batch_size = batch_size
        self.on_delivery = on_delivery
        self.keep_deliveries = keep_deliveries
        self.deliveries: list[Delivery] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sessions = ThreadSessions()
        self._lock = threading.Lock()
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(concurrency, "forward")
            if concurrency > 1
            else None
        )
        self._in_flight = threading.BoundedSemaphore(concurrency * 2)

    def start(self) -> EventarcForwarder:
        self._thread = threading.Thread(target=self._run, name="eventarc-forwarder", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._sessions.close()

    def __enter__(self) -> EventarcForwarder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def _run(self) -> None:
        from google.api_core import exceptions as api_exceptions

        while not self._stop.is_set():
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": self.batch_size},
                    timeout=1.0,
                )
            except api_exceptions.DeadlineExceeded:
                continue
            except Exception as exc:  # noqa: BLE001 - keep forwarding; the error is recorded
                self._record_error(f"pull: {type(exc).__name__}: {exc}")
                self._stop.wait(0.5)
                continue
            for item in response.received_messages:
                # Bounded in-flight work: stop pulling while the pool is busy.
                while not self._in_flight.acquire(timeout=0.5):
                    if self._stop.is_set():
                        return
                if self._pool is None:
                    self._forward(item)
                else:
                    self._pool.submit(self._forward, item)

    def _forward(self, item: Any) -> None:
        try:
            self._forward_one(item)
        except Exception as exc:  # noqa: BLE001 - unacked, it is redelivered after its deadline
            self._record_error(f"ack: {type(exc).__name__}: {exc}")
        finally:
            self._in_flight.release()

    def _forward_one(self, item: Any) -> None:
        message = item.message
        url = self.target_url
        if self.shape == "push":
            # Pub/Sub sets deliveryAttempt only with a dead-letter policy (0 here otherwise).
            attempt = int(item.delivery_attempt or 0) or None
            headers, body = pulled_push(message, self.subscription, attempt)
            url = self.target_url.rstrip("/") + push_path(self.topic)
        else:
            headers, body = pulled_cloudevent(message, self.subscription, self.topic)
        started = time.monotonic()
        sent_at = time.time()
        try:
            reply = self._sessions.get().post(
                url, data=body, headers=headers, timeout=self.request_timeout
            )
            status = reply.status_code
        except requests.RequestException as exc:
            status = -1
            self._sessions.discard()
            self._record_error(f"post: {type(exc).__name__}: {exc}")
        delivery = Delivery(
            message.message_id,
            int(item.delivery_attempt or 0),
            status,
            sent_at,
            time.monotonic() - started,
        )
        with self._lock:
            self.statuses[status] += 1
            if self.keep_deliveries:
                self.deliveries.append(delivery)
        request: dict[str, Any] = {"subscription": self.subscription, "ack_ids": [item.ack_id]}
        if 200 <= status < 300:
            self.subscriber.acknowledge(request=request)
        else:
            # A nack: Pub/Sub redelivers after the retry policy's backoff.
            self.subscriber.modify_ack_deadline(request={**request, "ack_deadline_seconds": 0})
        if self.on_delivery is not None:
            self.on_delivery(delivery)

    def _record_error(self, error: str) -> None:
        with self._lock:
            if len(self.errors) < 50:
                self.errors.append(error)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.eventarc_forwarder", description=__doc__
    )
    parser.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    parser.add_argument("--topic", required=True, help="projects/P/topics/T (the event source)")
    parser.add_argument("--target", required=True, help="function URL")
    parser.add_argument(
        "--shape",
        choices=["push", "eventarc"],
        default="push",
        help="push: the raw push body deploy.sh's subscription sends (default); "
        "eventarc: an Eventarc trigger's CloudEvent",
    )
    args = parser.parse_args(argv)

    from google.cloud import pubsub_v1

    def report(delivery: Delivery) -> None:
        print(
            f"delivered {delivery.message_id} attempt {delivery.delivery_attempt}"
            f" -> {delivery.status} in {delivery.seconds * 1000:.0f} ms",
            flush=True,
        )

    subscriber = pubsub_v1.SubscriberClient()
    forwarder = EventarcForwarder(
        subscriber, args.subscription, args.topic, args.target, on_delivery=report, shape=args.shape
    )
    print(f"READY forwarding {args.subscription} -> {args.target}", flush=True)
    forwarder.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        forwarder.stop()
        subscriber.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
