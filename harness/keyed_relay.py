"""Relays with keyed waits on, for many operations fast: callbacks recorded in process.

For the race and model tests (tests/events) and the benchmark (bench/keyed_waits.py).

The store, the correlation and the relay are the real ones on the Firestore
emulator; only the callback's HTTP call is replaced by a recorder (the HTTP path
has its own tests), so that a race test can run hundreds of operations in seconds.

Several relays on one Firestore project stand for several function instances:
each has its own store and session, and they meet only in Firestore.

The mutant of docs/events.md ("Proving the races"): with
``KEYED_WAITS_MUTANT=no-transaction`` the stores commit without their
preconditions (a read, then a blind write), and the race and model tests must fail.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from typing import Any

from callback_relay.callback_response import Classification, DeliveryResult, Kind
from callback_relay.event_store import Change, FirestoreEventStore
from callback_relay.outcome_log import RelayOutcome
from callback_relay.relay import CallbackRelay, create_relay
from callback_relay.trace_context import TraceContext
from harness import cloudevents
from harness.firestore_emulator import FirestoreEmulator

ORIGIN = "127.0.0.1:9"  # never called: the recorder answers


class RecordingClient:
    """CallbackClient.deliver, answered 200 at once, every call recorded with its time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.times: list[float] = []

    def deliver(
        self,
        method: str,
        url: str,
        body: bytes | None,
        key: str,
        expires_in_seconds: float | None = None,
    ) -> DeliveryResult:
        with self.lock:
            self.calls.append((url, json.loads(body or b"null")))
            self.times.append(time.perf_counter())
        return DeliveryResult(Classification(Kind.DELIVERED, "callback received", 200), 1, 0.1)


class UnconditionalStore(FirestoreEventStore):
    """The mutant: every commit without its precondition (no transaction)."""

    def _channel_write(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        write = super()._channel_write(*args, **kwargs)
        write.pop("currentDocument")
        return write

    def _create(self, change: Change) -> dict[str, Any]:
        write = super()._create(change)
        write.pop("currentDocument")
        return write


def mutant() -> bool:
    return os.environ.get("KEYED_WAITS_MUTANT") == "no-transaction"


def callback_url(execution: str, callback: str, workflow: str = "w") -> str:
    return (
        f"http://{ORIGIN}/v1/projects/p/locations/l/workflows/{workflow}"
        f"/executions/{execution}/callbacks/{callback}"
    )


class FastRelay:
    def __init__(
        self,
        firestore: FirestoreEmulator,
        project: str,
        client: RecordingClient,
        clock: Any = time.time,
    ) -> None:
        env = {
            "WORKFLOWS_EMULATOR_HOST": ORIGIN,
            "EVENT_STORE": "firestore",
            "GOOGLE_CLOUD_PROJECT": project,
            "FIRESTORE_EMULATOR_HOST": firestore.address,
            "CALLBACK_RETRY_DEADLINE_SECONDS": "60",
            "LOG_LEVEL": "ERROR",
        }
        self.relay: CallbackRelay = create_relay(env)
        keyed = self.relay.keyed
        assert keyed is not None
        if mutant():
            store = keyed.store
            keyed.store = UnconditionalStore(
                store.session, None, project, origin=f"http://{firestore.address}"
            )
        keyed.now = clock
        self.relay.now = lambda: datetime.datetime.fromtimestamp(clock(), datetime.UTC)
        self.relay.client = keyed.client = client
        self.clock = clock

    def deliver(self, data: dict[str, Any], message_id: str) -> RelayOutcome:
        message = cloudevents.pubsub_message(json.dumps(data).encode(), message_id)
        return self.relay.relay_event(
            message_id, cloudevents.SOURCE, {"message": message}, TraceContext.from_headers({})
        )

    def wait(self, url: str, key: str, message_id: str, ttl: float = 3600) -> RelayOutcome:
        expires = datetime.datetime.fromtimestamp(self.clock() + ttl, datetime.UTC)
        data = {
            "kind": "wait",
            "callback_url": url,
            "key": key,
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        return self.deliver(data, message_id)

    def event(self, key: str, payload: Any, message_id: str, **fields: Any) -> RelayOutcome:
        return self.deliver({"kind": "event", "key": key, "payload": payload, **fields}, message_id)
