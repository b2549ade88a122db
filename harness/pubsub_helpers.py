"""Small synchronous Pub/Sub helpers for tests (bounded pulls, publishes)."""

from __future__ import annotations

import time
import uuid
import warnings
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
        path = emulator.topic_path(topic)
        message = PubsubMessage(data=data, attributes=dict(attributes), ordering_key=ordering_key)
        response = publisher.publish(topic=path, messages=[message], timeout=30)
        return str(response.message_ids[0])
    finally:
        publisher.transport.close()


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
    path = emulator.subscription_path(subscription)
    subscriber = emulator.subscriber()
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < expected and time.monotonic() < deadline:
            batch = _pull_batch(subscriber, path, 10, deadline)
            if batch and ack:
                ack_ids = [m.ack_id for m in batch]
                subscriber.acknowledge(request={"subscription": path, "ack_ids": ack_ids})
            elif batch:
                _lease(subscriber, path, batch, 0)  # back for whoever pulls next
            received.extend(batch)
    finally:
        subscriber.close()
    return received


def _lease(subscriber: Any, path: str, received: list[Any], seconds: int) -> None:
    """Hold the received messages for `seconds` more; 0 nacks them (back at once)."""
    subscriber.modify_ack_deadline(
        request={
            "subscription": path,
            "ack_ids": [m.ack_id for m in received],
            "ack_deadline_seconds": seconds,
        }
    )


def _pull_now(subscriber: Any, path: str) -> list[Any]:
    """What the subscription hands out at this moment, without waiting for more.

    return_immediately is deprecated for production subscribers (they should wait
    for messages) but still honoured; here an empty answer must mean "nothing is
    available now", not "nothing arrived before a timeout".
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        response = subscriber.pull(
            request={"subscription": path, "max_messages": 1000, "return_immediately": True},
            timeout=30,
        )
    return list(response.received_messages)


def available_now(emulator: PubSubEmulator, subscription: str) -> list[Any]:
    """Every message a subscriber could pull right now: not the ones leased by someone
    who neither acked nor nacked them (remaining() counts those too).

    Each is held while counting, so it is counted once, then nacked: it stays.
    """
    path = emulator.subscription_path(subscription)
    subscriber = emulator.subscriber()
    found: dict[str, Any] = {}
    try:
        while batch := _pull_now(subscriber, path):
            _lease(subscriber, path, batch, 60)
            found.update((m.message.message_id, m) for m in batch)
        if found:
            _lease(subscriber, path, list(found.values()), 0)
    finally:
        subscriber.close()
    return list(found.values())


def remaining(emulator: PubSubEmulator, subscription: str) -> list[Any]:
    """Every message not yet acknowledged on the subscription, counting ones leased
    and never acked or nacked, and ones an ordering key holds back. At once.

    A snapshot records the subscription's acknowledgment state, in which a leased
    message is unacknowledged; seeking to the snapshot sets that state back
    (https://cloud.google.com/pubsub/docs/replay-overview). So: snapshot, seek to it
    (which frees leased messages), pull and ack everything, seek back. The
    subscription keeps every message it had, with any leases dropped: the messages
    are deliverable again at once. Call it only while nobody else reads the
    subscription.
    """
    path = emulator.subscription_path(subscription)
    snapshot = f"projects/{emulator.project}/snapshots/remaining-{uuid.uuid4().hex}"
    subscriber = emulator.subscriber()
    found: dict[str, Any] = {}
    try:
        subscriber.create_snapshot(request={"name": snapshot, "subscription": path})
        try:
            # Seeking drops the leases: leased messages are delivered to us too.
            subscriber.seek(request={"subscription": path, "snapshot": snapshot})
            while batch := _pull_now(subscriber, path):
                subscriber.acknowledge(
                    request={"subscription": path, "ack_ids": [m.ack_id for m in batch]}
                )
                found.update((m.message.message_id, m) for m in batch)
        finally:
            subscriber.seek(request={"subscription": path, "snapshot": snapshot})
            subscriber.delete_snapshot(request={"snapshot": snapshot})
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
    path = emulator.subscription_path(subscription)
    subscriber = emulator.subscriber()
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if batch := _pull_now(subscriber, path):
                seen.update(m.message.message_id for m in batch)
                _lease(subscriber, path, batch, 0)
                continue
            if len(seen) >= expected:
                forwarded = available_now(emulator, dead_letter_subscription)
                if len(forwarded) >= expected:
                    if len(forwarded) > expected:
                        raise AssertionError(
                            f"{len(forwarded)} messages on {dead_letter_subscription}, "
                            f"not {expected}"
                        )
                    return forwarded
            time.sleep(0.05)  # a retry policy's backoff may hold a nacked message
    finally:
        subscriber.close()
    raise TimeoutError(
        f"{subscription}: {len(seen)}/{expected} messages seen, "
        f"{len(available_now(emulator, dead_letter_subscription))} dead-lettered"
    )
