"""Small synchronous Pub/Sub helpers for tests (bounded pulls, publishes)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from harness.pubsub_emulator import PubSubEmulator, _environment


def publish(emulator: PubSubEmulator, topic: str, data: bytes, **attributes: str) -> str:
    """publish_message with attributes as keywords, for the names a test spells out."""
    return publish_message(emulator, topic, data, attributes)


def publish_message(
    emulator: PubSubEmulator,
    topic: str,
    data: bytes,
    attributes: Mapping[str, str],
    ordering_key: str = "",
) -> str:
    """Publish through the Publish RPC, attributes as a map: any attribute name goes
    through (the batching client's publish(topic, data, **attrs) cannot send attributes
    named topic, data, timeout, retry or ordering_key)."""
    from google.pubsub_v1 import PublisherClient, PubsubMessage

    with _environment(emulator.env()):
        publisher: Any = PublisherClient()  # generated client: publish is the RPC itself
    try:
        path = topic if topic.startswith("projects/") else emulator.topic_path(topic)
        message = PubsubMessage(data=data, attributes=dict(attributes), ordering_key=ordering_key)
        response = publisher.publish(topic=path, messages=[message], timeout=30)
        return str(response.message_ids[0])
    finally:
        publisher.transport.close()


def _subscription_path(emulator: PubSubEmulator, subscription: str) -> str:
    if subscription.startswith("projects/"):
        return subscription
    return emulator.subscription_path(subscription)


def _pull_batch(subscriber: Any, path: str, max_messages: int, deadline: float) -> list[Any]:
    """One pull that ends by `deadline` (at most 3 s); nothing when the pull timed out."""
    from google.api_core import exceptions as api_exceptions

    try:
        response = subscriber.pull(
            request={"subscription": path, "max_messages": max_messages},
            timeout=max(0.5, min(3.0, deadline - time.monotonic())),
        )
    except api_exceptions.DeadlineExceeded:
        return []
    return list(response.received_messages)


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
    path = _subscription_path(emulator, subscription)
    subscriber = emulator.subscriber()
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < expected and time.monotonic() < deadline:
            batch = _pull_batch(subscriber, path, 10, deadline)
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


def ack_deadline_seconds(emulator: PubSubEmulator, subscription: str) -> int:
    subscriber = emulator.subscriber()
    try:
        found = subscriber.get_subscription(
            request={"subscription": _subscription_path(emulator, subscription)}
        )
        return int(found.ack_deadline_seconds)
    finally:
        subscriber.close()


def remaining(
    emulator: PubSubEmulator,
    subscription: str,
    grace: float = 3.0,
    within: float | None = None,
) -> list[Any]:
    """Every distinct message on the subscription, counting ones leased and never acked.

    A message someone pulled and neither acked nor nacked is invisible until its
    ack deadline passes (https://cloud.google.com/pubsub/docs/lease-management),
    so this pulls until the subscription's ack deadline plus `grace` has passed
    (or only for `within` seconds, to see what is available at once).
    Each message found is held meanwhile (so it is counted once), then nacked: the
    subscription is left as it was. Use the minimum ack deadline, 10 s, on test
    subscriptions to keep this short.
    """
    path = _subscription_path(emulator, subscription)
    wait = ack_deadline_seconds(emulator, subscription) + grace if within is None else within
    deadline = time.monotonic() + wait
    subscriber = emulator.subscriber()
    found: dict[str, Any] = {}
    try:
        while time.monotonic() < deadline:
            batch = _pull_batch(subscriber, path, 100, deadline)
            if batch:
                subscriber.modify_ack_deadline(
                    request={
                        "subscription": path,
                        "ack_ids": [m.ack_id for m in batch],
                        "ack_deadline_seconds": 60,
                    }
                )
            for item in batch:
                found[item.message.message_id] = item
        if found:
            subscriber.modify_ack_deadline(
                request={
                    "subscription": path,
                    "ack_ids": [m.ack_id for m in found.values()],
                    "ack_deadline_seconds": 0,
                }
            )
    finally:
        subscriber.close()
    return list(found.values())


def drained(emulator: PubSubEmulator, subscription: str) -> bool:
    """True when nothing is on the subscription, not even a message someone leased
    and never acked (see remaining())."""
    return not remaining(emulator, subscription)


def dead_letter(
    emulator: PubSubEmulator,
    subscription: str,
    dead_letter_subscription: str,
    expected: int,
    timeout: float = 60.0,
) -> list[Any]:
    """Nack everything on `subscription` (which has a dead-letter policy) until
    `expected` messages wait on `dead_letter_subscription`; return those (nacked,
    so they are still there).

    The emulator forwards a message once its delivery attempts reach
    max_delivery_attempts, on a later pull; the forwarded copy carries the
    CloudPubSubDeadLetter* attributes, as in production.
    """
    path = _subscription_path(emulator, subscription)
    subscriber = emulator.subscriber()
    seen: set[str] = set()
    gone_quiet = 0
    deadline = time.monotonic() + timeout
    try:
        # Done when every expected message was delivered and none comes back.
        while len(seen) < expected or gone_quiet < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{subscription}: {len(seen)}/{expected} messages seen")
            batch = _pull_batch(subscriber, path, 100, time.monotonic() + 2)
            if not batch:
                gone_quiet += 1
                continue
            gone_quiet = 0
            seen.update(m.message.message_id for m in batch)
            subscriber.modify_ack_deadline(
                request={
                    "subscription": path,
                    "ack_ids": [m.ack_id for m in batch],
                    "ack_deadline_seconds": 0,
                }
            )
    finally:
        subscriber.close()
    forwarded = pull(emulator, dead_letter_subscription, expected, timeout=20, ack=False)
    if len(forwarded) != expected:
        raise TimeoutError(f"{len(forwarded)}/{expected} reached {dead_letter_subscription}")
    return forwarded
