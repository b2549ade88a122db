"""Publish one Pub/Sub message with its attributes passed as a map.

``PublisherClient.publish(topic, data, ordering_key="", retry=..., timeout=...,
**attrs)`` takes attributes as keyword arguments, so attributes named ``topic``,
``data``, ``ordering_key``, ``retry`` or ``timeout`` collide with its own
parameters (some raise at once, some break the batching thread). This module
calls the Publish RPC directly with a ``PubsubMessage`` whose ``attributes`` is
a map, so any attribute name the service accepts goes through unchanged.
Publish RPC: https://cloud.google.com/pubsub/docs/reference/rpc/google.pubsub.v1#google.pubsub.v1.Publisher.Publish
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.pubsub_retry import PUBLISH_RETRY_CODES, retry_within


def publish_message(
    publisher: Any,
    topic: str,
    data: bytes,
    attributes: Mapping[str, str] | None = None,
    *,
    ordering_key: str = "",
    timeout: float = 30.0,
) -> str:
    """Publish one message through ``publisher``, a generated ``google.pubsub_v1.PublisherClient``
    (it honours PUBSUB_EMULATOR_HOST).

    Returns the server-assigned message id. Transient errors are retried (the
    generated client's codes), and no retry starts after ``timeout`` seconds; each
    attempt is limited to ``timeout`` too. Past that, ``RetryError``: the message
    may or may not have been published.
    """
    from google.pubsub_v1 import PubsubMessage

    message = PubsubMessage(data=data, attributes=dict(attributes or {}), ordering_key=ordering_key)
    response = publisher.publish(
        topic=topic,
        messages=[message],
        retry=retry_within(timeout, PUBLISH_RETRY_CODES),
        timeout=timeout,
    )
    (message_id,) = response.message_ids
    return str(message_id)
