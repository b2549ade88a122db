"""Small synchronous Pub/Sub helpers for tests (bounded pulls, publishes)."""

from __future__ import annotations

import time
from typing import Any

from harness.pubsub_emulator import PubSubEmulator


def publish(emulator: PubSubEmulator, topic: str, data: bytes, **attributes: str) -> str:
    publisher = emulator.publisher()
    try:
        path = topic if topic.startswith("projects/") else emulator.topic_path(topic)
        return str(publisher.publish(path, data, **attributes).result(timeout=30))
    finally:
        publisher.stop()


def pull(
    emulator: PubSubEmulator,
    subscription: str,
    expected: int,
    timeout: float = 15.0,
    ack: bool = True,
) -> list[Any]:
    """Pull until `expected` messages arrived or `timeout` passed; return what arrived.

    With ack=False the messages are nacked, so they stay on the subscription.
    """
    from google.api_core import exceptions as api_exceptions

    path = (
        subscription
        if subscription.startswith("projects/")
        else emulator.subscription_path(subscription)
    )
    subscriber = emulator.subscriber()
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < expected and time.monotonic() < deadline:
            try:
                response = subscriber.pull(
                    request={"subscription": path, "max_messages": 10},
                    timeout=max(0.5, min(3.0, deadline - time.monotonic())),
                )
            except api_exceptions.DeadlineExceeded:
                continue
            batch = list(response.received_messages)
            if batch:
                ack_ids = [m.ack_id for m in batch]
                if ack:
                    subscriber.acknowledge(request={"subscription": path, "ack_ids": ack_ids})
                else:
                    # Hand them straight back, for whoever pulls next.
                    subscriber.modify_ack_deadline(
                        request={
                            "subscription": path,
                            "ack_ids": ack_ids,
                            "ack_deadline_seconds": 0,
                        }
                    )
            received.extend(batch)
    finally:
        subscriber.close()
    return received


def drained(emulator: PubSubEmulator, subscription: str, wait: float = 2.0) -> bool:
    """True when a pull for `wait` seconds returns nothing (messages are not acked)."""
    return not pull(emulator, subscription, expected=1, timeout=wait, ack=False)
