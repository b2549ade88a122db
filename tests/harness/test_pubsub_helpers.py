"""The helpers that prove a negative on the emulator count what a sleep would have.

remaining() must see a message somebody leased and never acked, and one an
ordering key holds back; available_now() must not see a leased one. Both leave
the subscription with every message it had.
"""

from __future__ import annotations

import pytest

from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import available_now, drained, publish_message, remaining

pytestmark = pytest.mark.emulator


def ids(received: list[object]) -> set[str]:
    return {m.message.message_id for m in received}  # type: ignore[attr-defined]


def lease(emulator: PubSubEmulator, subscription: str, count: int) -> list[object]:
    """Pull `count` messages and neither ack nor nack them: a crashed subscriber."""
    subscriber = emulator.subscriber()
    try:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": count}, timeout=10
        )
    finally:
        subscriber.close()
    leased = list(response.received_messages)
    assert len(leased) == count
    return leased


def ack(emulator: PubSubEmulator, subscription: str, received: list[object]) -> None:
    subscriber = emulator.subscriber()
    try:
        subscriber.acknowledge(
            request={"subscription": subscription, "ack_ids": [m.ack_id for m in received]}  # type: ignore[attr-defined]
        )
    finally:
        subscriber.close()


def test_remaining_counts_leased_messages_and_available_now_does_not(
    emulator: PubSubEmulator,
) -> None:
    topic = emulator.create_topic(unique_name("helpers"))
    sub = emulator.create_subscription(unique_name("helpers-sub"), topic)
    published = [publish_message(emulator, topic, f"m{n}".encode(), {}) for n in range(4)]
    leased = lease(emulator, sub, 2)
    ack(emulator, sub, leased[:1])
    acked = ids(leased[:1])
    still_leased = ids(leased[1:])

    assert ids(available_now(emulator, sub)) == set(published) - acked - still_leased
    # The lease outlives both calls above; remaining() still counts it.
    assert ids(remaining(emulator, sub)) == set(published) - acked
    # It left every message there: the leased one is deliverable again at once.
    assert ids(available_now(emulator, sub)) == set(published) - acked
    assert ids(remaining(emulator, sub)) == set(published) - acked
    assert not drained(emulator, sub)


def test_remaining_sees_messages_an_ordering_key_holds_back(emulator: PubSubEmulator) -> None:
    topic = emulator.create_topic(unique_name("helpers-ordered"))
    sub = emulator.create_subscription(
        unique_name("helpers-ordered-sub"), topic, enable_message_ordering=True
    )
    published = [
        publish_message(emulator, topic, f"k{n}".encode(), {}, ordering_key="K") for n in range(3)
    ]
    lease(emulator, sub, 1)

    assert ids(available_now(emulator, sub)) <= set(published[1:])
    assert ids(remaining(emulator, sub)) == set(published)
    assert ids(remaining(emulator, sub)) == set(published)


def test_drained_after_everything_is_acked(emulator: PubSubEmulator) -> None:
    topic = emulator.create_topic(unique_name("helpers-drained"))
    sub = emulator.create_subscription(unique_name("helpers-drained-sub"), topic)
    assert drained(emulator, sub)
    publish_message(emulator, topic, b"one", {})
    ack(emulator, sub, lease(emulator, sub, 1))
    assert drained(emulator, sub)
    assert available_now(emulator, sub) == []
