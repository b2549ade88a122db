"""Deliver Pub/Sub messages to a function the way Eventarc does, from a pull subscription.

Eventarc's Pub/Sub trigger POSTs a binary-mode CloudEvent: ``ce-*`` headers
(type ``google.cloud.pubsub.topic.v1.messagePublished``, source
``//pubsub.googleapis.com/projects/P/topics/T``) and a JSON body
``{"message": {data, attributes, messageId, publishTime}, "subscription": ...}``.
This forwarder pulls from a subscription, POSTs each message in that shape, and
acknowledges on 2xx; otherwise it nacks, so the subscription's retry policy and
dead-letter policy apply, as they do in production.

    python -m tools.eventarc_forwarder --subscription projects/P/subscriptions/S \
        --topic projects/P/topics/T --target http://127.0.0.1:8080/

Local use only (emulator via PUBSUB_EMULATOR_HOST).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One POST to the target and how it ended."""

    message_id: str
    delivery_attempt: int
    status: int  # HTTP status, or -1 when the request itself failed
    sent_at: float
    seconds: float


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def binary_cloudevent(
    message_id: str,
    data: bytes,
    attributes: dict[str, str],
    publish_time: datetime.datetime,
    subscription: str,
    topic: str,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of the CloudEvent Eventarc would send for this message."""
    published = rfc3339(publish_time)
    message: dict[str, Any] = {
        "data": base64.b64encode(data).decode("ascii"),
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": published,
        "publish_time": published,
    }
    if attributes:
        message["attributes"] = attributes
    headers = {
        "Content-Type": "application/json",
        "ce-id": message_id,
        "ce-source": f"//pubsub.googleapis.com/{topic}",
        "ce-specversion": "1.0",
        "ce-type": EVENT_TYPE,
        "ce-time": published,
    }
    body = json.dumps({"message": message, "subscription": subscription}).encode()
    return headers, body


def pulled_cloudevent(message: Any, subscription: str, topic: str) -> tuple[dict[str, str], bytes]:
    """binary_cloudevent for a message pulled with google-cloud-pubsub."""
    return binary_cloudevent(
        message.message_id,
        message.data,
        dict(message.attributes),
        message.publish_time,
        subscription,
        topic,
    )


class EventarcForwarder:
    """Pull -> POST CloudEvent -> ack/nack, in a background thread until stopped."""

    def __init__(
        self,
        subscriber: Any,
        subscription: str,
        topic: str,
        target_url: str,
        *,
        request_timeout: float = 60.0,
        batch_size: int = 10,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.subscription = subscription
        self.topic = topic
        self.target_url = target_url
        self.request_timeout = request_timeout
        self.batch_size = batch_size
        self.on_delivery = on_delivery
        self.deliveries: list[Delivery] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session = requests.Session()
        self._lock = threading.Lock()

    def start(self) -> EventarcForwarder:
        self._thread = threading.Thread(target=self._run, name="eventarc-forwarder", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._session.close()

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
                with self._lock:
                    self.errors.append(f"pull: {type(exc).__name__}: {exc}")
                self._stop.wait(0.5)
                continue
            for item in response.received_messages:
                self._forward(item)

    def _forward(self, item: Any) -> None:
        message = item.message
        headers, body = pulled_cloudevent(message, self.subscription, self.topic)
        started = time.monotonic()
        sent_at = time.time()
        try:
            reply = self._session.post(
                self.target_url, data=body, headers=headers, timeout=self.request_timeout
            )
            status = reply.status_code
        except requests.RequestException as exc:
            status = -1
            with self._lock:
                self.errors.append(f"post: {type(exc).__name__}: {exc}")
        delivery = Delivery(
            message.message_id,
            int(item.delivery_attempt or 0),
            status,
            sent_at,
            time.monotonic() - started,
        )
        with self._lock:
            self.deliveries.append(delivery)
        if 200 <= status < 300:
            self.subscriber.acknowledge(
                request={"subscription": self.subscription, "ack_ids": [item.ack_id]}
            )
        else:
            # A nack: Pub/Sub redelivers after the retry policy's backoff.
            self.subscriber.modify_ack_deadline(
                request={
                    "subscription": self.subscription,
                    "ack_ids": [item.ack_id],
                    "ack_deadline_seconds": 0,
                }
            )
        if self.on_delivery is not None:
            self.on_delivery(delivery)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.eventarc_forwarder", description=__doc__)
    parser.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    parser.add_argument("--topic", required=True, help="projects/P/topics/T (the event source)")
    parser.add_argument("--target", required=True, help="function URL")
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
        subscriber, args.subscription, args.topic, args.target, on_delivery=report
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
