"""A relay with keyed waits on, in this process, against the Firestore emulator.

Real parts: the relay (create_relay from an environment, as main.py builds it),
the Firestore REST store on the emulator, the HTTP client with tokens from the
fake metadata server, and the fake Workflows API. Each KeyedRelay has a
Firestore project of its own, so tests never share a database.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from callback_relay.errors import RedeliveryRequested
from callback_relay.outcome_log import RelayOutcome
from callback_relay.relay import CallbackRelay, create_relay
from callback_relay.trace_context import TraceContext
from harness import cloudevents
from harness.fake_workflows_api import FakeWorkflowsApi
from harness.firestore_emulator import FirestoreEmulator

RELAY_TOPIC = cloudevents.TOPIC_PATH


def topic_source(topic: str) -> str:
    path = (
        topic if topic.startswith("projects/") else f"projects/{cloudevents.PROJECT}/topics/{topic}"
    )
    return f"//pubsub.googleapis.com/{path}"


class Clock:
    """Seconds since the epoch, moved by hand (expiry without waiting)."""

    def __init__(self) -> None:
        self.at = time.time()

    def __call__(self) -> float:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += seconds


@dataclasses.dataclass
class KeyedRelay:
    relay: CallbackRelay
    api: FakeWorkflowsApi
    firestore: FirestoreEmulator
    project: str
    clock: Clock
    _ids: Iterator[int] = dataclasses.field(default_factory=lambda: iter(range(1, 10**9)))

    # -- what workflows and publishers do -------------------------------------

    def execution(self, workflow: str = "orders") -> str:
        return self.api.create_execution(workflow)

    def callback(self, execution: str | None = None) -> str:
        return self.api.create_callback(execution or self.execution())

    def wait_data(self, url: str, key: str, source: str | None = None, **fields: Any) -> bytes:
        expires = datetime.datetime.fromtimestamp(self.clock() + 600, datetime.UTC)
        message: dict[str, Any] = {
            "kind": "wait",
            "callback_url": url,
            "key": key,
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            **fields,
        }
        if source is not None:
            message["source"] = source
        return json.dumps(message).encode()

    @staticmethod
    def event_data(key: str, payload: Any = None, **fields: Any) -> bytes:
        return json.dumps(
            {"kind": "event", "key": key, "payload": payload or {}, **fields}
        ).encode()

    def deliver(
        self,
        data: bytes,
        message_id: str | None = None,
        topic: str = RELAY_TOPIC,
        attributes: dict[str, str] | None = None,
    ) -> RelayOutcome:
        """One Eventarc delivery; raises RedeliveryRequested as the entry point would."""
        message_id = message_id or f"m-{next(self._ids)}"
        message = cloudevents.pubsub_message(data, message_id, attributes)
        return self.relay.relay_event(
            message_id,
            topic_source(topic),
            {"message": message, "subscription": cloudevents.SUBSCRIPTION},
            TraceContext.from_headers({}),
        )

    def wait(self, url: str, key: str, **fields: Any) -> RelayOutcome:
        return self.deliver(self.wait_data(url, key, **fields))

    def event(self, key: str, payload: Any = None, **fields: Any) -> RelayOutcome:
        return self.deliver(self.event_data(key, payload, **fields))

    # -- what the tests read ------------------------------------------------------

    def resumed_with(self, url: str) -> list[dict[str, Any]]:
        """The bodies the callback received (200s only), oldest first."""
        return [json.loads(c.body) for c in self.api.calls_to(url) if c.status == 200]

    def take(self, url: str) -> dict[str, Any]:
        """The request a waiting step receives (events.await_callback), at once."""
        return dict(self.api.await_callback(url, timeout=0.01)["http_request"]["body"])


def keyed_relay(
    monkeypatch: pytest.MonkeyPatch,
    api: FakeWorkflowsApi,
    firestore: FirestoreEmulator,
    **env: str,
) -> KeyedRelay:
    project = firestore.new_project()
    values = {
        "WORKFLOWS_EMULATOR_HOST": api.emulator_host,
        # Also the store's deadline: a shared machine can stall the emulator for a second.
        "CALLBACK_RETRY_DEADLINE_SECONDS": "5",
        "CALLBACK_CONNECT_TIMEOUT_SECONDS": "1",
        "CALLBACK_READ_TIMEOUT_SECONDS": "1",
        "EVENT_STORE": "firestore",
        "GOOGLE_CLOUD_PROJECT": project,
        "FIRESTORE_EMULATOR_HOST": firestore.address,
        **env,
    }
    relay = create_relay(values)
    clock = Clock()
    assert relay.keyed is not None
    relay.keyed.now = clock
    relay.now = lambda: datetime.datetime.fromtimestamp(clock(), datetime.UTC)
    return KeyedRelay(relay, api, firestore, project, clock)


__all__ = ["KeyedRelay", "RedeliveryRequested", "keyed_relay", "topic_source"]
