"""Race-free by construction: many waits and events at once, and a model of the table.

- Threaded races: four relays (four function instances) and eight threads send
  waits and events for a few keys all at once; afterwards every execution was
  resumed exactly once (no lost wake-up) with one of its key's events, and no
  callback twice. Repeated several times, each on a fresh database.
- A loop per execution (wait, resumed, wait again) against events published at
  the same time: each execution gets distinct events, oldest first.
- Hypothesis stateful: random waits, events (with repeated ids), redeliveries and
  clock moves against an in-memory model of docs/events.md's table.

Against the mutant store without its conditional commit (``KEYED_WAITS_MUTANT=
no-transaction``, see fast_relay.py) these tests fail; docs/events.md reports the run.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import random
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from callback_relay.errors import RedeliveryRequested
from harness.firestore_emulator import FirestoreEmulator
from harness.keyed_relay import FastRelay, RecordingClient, callback_url

pytestmark = pytest.mark.emulator


def run_all(tasks: list[Any], threads: int = 8) -> None:
    """Run the tasks at once; a redelivery request is retried, as Pub/Sub would."""

    def attempt(task: Any) -> None:
        for _ in range(20):
            try:
                task()
                return
            except RedeliveryRequested:
                time.sleep(random.uniform(0, 0.05))
        raise AssertionError("a message was never taken")

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(attempt, task) for task in tasks]:
            future.result()


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(3))
def test_many_waits_and_events_at_once(firestore: FirestoreEmulator, round_: int) -> None:
    project = firestore.new_project()
    client = RecordingClient()
    relays = [FastRelay(firestore, project, client) for _ in range(4)]
    keys = [f"order:{k}" for k in range(3)]
    executions = {f"e{round_}-{n}": keys[n % len(keys)] for n in range(24)}
    urls = {execution: callback_url(execution, "c1") for execution in executions}
    tasks: list[Any] = []
    for execution, key in executions.items():
        relay = random.choice(relays)
        tasks.append(lambda r=relay, e=execution, k=key: r.wait(urls[e], k, f"w-{e}"))
    for key in keys:
        for n in range(3):
            relay = random.choice(relays)
            tasks.append(lambda r=relay, k=key, n=n: r.event(k, {"key": k, "n": n}, f"ev-{k}-{n}"))
    random.shuffle(tasks)
    run_all(tasks)
    called = collections.Counter(url for url, _ in client.calls)
    assert sorted(set(called.values())) == [1], "a callback was called twice"
    lost = [e for e, url in urls.items() if called[url] == 0]
    assert lost == [], f"lost wake-ups: {lost}"
    for url, body in client.calls:
        execution = url.split("/executions/")[1].split("/")[0]
        assert body["key"] == executions[execution] == body["payload"]["key"]


def test_an_execution_looping_over_its_key_gets_each_event_once_oldest_first(
    firestore: FirestoreEmulator,
) -> None:
    project = firestore.new_project()
    client = RecordingClient()
    relays = [FastRelay(firestore, project, client) for _ in range(3)]
    events_per_key, loops = 6, 4

    def loop(execution: str) -> None:
        for n in range(loops):
            url = callback_url(execution, f"c{n}")
            outcome = relays[n % 3].wait(url, "queue", f"w-{execution}-{n}")
            deadline = time.monotonic() + 10
            while outcome.outcome == "wait_registered" and not any(
                u == url for u, _ in client.calls
            ):
                assert time.monotonic() < deadline, f"{execution} was never resumed"
                time.sleep(0.01)

    publishers = [
        (lambda n=n: relays[n % 3].event("queue", {"n": n}, f"ev-{n}"))
        for n in range(events_per_key)
    ]
    run_all([*(lambda e=f"x{i}": loop(e) for i in range(3)), *publishers], threads=6)
    by_execution: dict[str, list[int]] = collections.defaultdict(list)
    for url, body in client.calls:
        by_execution[url.split("/executions/")[1].split("/")[0]].append(body["payload"]["n"])
    for execution, received in by_execution.items():
        assert len(received) == loops, (execution, received)
        assert len(set(received)) == loops, f"{execution} got an event twice: {received}"
    # Oldest first: each execution's events in the order the store numbered them.
    seq = {
        int(doc["fields"]["event_id"]["stringValue"].removeprefix("ev-")): int(
            doc["fields"]["seq"]["integerValue"]
        )
        for doc in firestore.documents(project, "relay_events")
    }
    for execution, received in by_execution.items():
        numbers = [seq[n] for n in received]
        assert numbers == sorted(numbers), f"{execution} got {received}, store order {seq}"


# -- the model ---------------------------------------------------------------------


@dataclasses.dataclass
class ModelEvent:
    seq: int
    expires: float
    payload: int


class KeyedWaitsModel:
    """docs/events.md's table, written as plainly as possible."""

    def __init__(self) -> None:
        self.now = 0.0
        self.seq = 0
        self.waiters: dict[str, list[tuple[str, str, float]]] = collections.defaultdict(list)
        self.events: dict[str, list[ModelEvent]] = collections.defaultdict(list)
        self.received: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
        self.ids: dict[tuple[str, str], int] = {}
        self.calls: list[tuple[str, int]] = []

    def wait(self, url: str, execution: str, key: str, expires: float) -> None:
        got = self.received[(key, execution)]
        live = [e for e in self.events[key] if e.expires > self.now and e.seq not in got]
        if live:
            oldest = min(live, key=lambda e: e.seq)
            got.add(oldest.seq)
            self.calls.append((url, oldest.payload))
        else:
            self.waiters[key].append((url, execution, expires))

    def event(self, key: str, event_id: str, ttl: int, payload: int) -> None:
        if (key, event_id) in self.ids:
            return
        self.seq += 1
        self.ids[(key, event_id)] = self.seq
        served: set[str] = set()
        kept = []
        for url, execution, expires in self.waiters[key]:
            if expires <= self.now:
                continue
            if execution in served:
                kept.append((url, execution, expires))
                continue
            served.add(execution)
            self.received[(key, execution)].add(self.seq)
            self.calls.append((url, payload))
        self.waiters[key] = kept
        if ttl > 0:
            self.events[key].append(ModelEvent(self.seq, self.now + ttl, payload))


class KeyedWaitsMachine(RuleBasedStateMachine):
    firestore: FirestoreEmulator

    def __init__(self) -> None:
        super().__init__()
        # Whole seconds: expiry instants survive RFC 3339's microseconds exactly.
        self.clock_at = float(int(time.time()))
        self.start = self.clock_at
        self.client = RecordingClient()
        project = self.firestore.new_project()
        clock = lambda: self.clock_at  # noqa: E731
        self.relays = [FastRelay(self.firestore, project, self.client, clock) for _ in range(2)]
        self.model = KeyedWaitsModel()
        self.ids = itertools.count(1)
        self.last_wait: tuple[FastRelay, str, str, str, float] | None = None
        self.last_event: dict[str, Any] | None = None

    @rule(
        execution=st.sampled_from(["a", "b", "c"]),
        key=st.sampled_from(["k1", "k2"]),
        lifetime=st.sampled_from([30, 300]),
        relay=st.integers(0, 1),
    )
    def wait(self, execution: str, key: str, lifetime: int, relay: int) -> None:
        url = callback_url(execution, uuid.uuid4().hex)
        message_id = f"w-{next(self.ids)}"
        self.relays[relay].wait(url, key, message_id, ttl=lifetime)
        self.model.wait(url, execution, key, self.model.now + lifetime)
        self.last_wait = (self.relays[relay], url, key, message_id, lifetime)

    @rule(
        key=st.sampled_from(["k1", "k2"]),
        event_id=st.sampled_from([None, "x", "y"]),
        ttl=st.sampled_from([0, 40, 200]),
        relay=st.integers(0, 1),
    )
    def event(self, key: str, event_id: str | None, ttl: int, relay: int) -> None:
        n = next(self.ids)
        message_id = f"ev-{n}"
        fields: dict[str, Any] = {"ttl_seconds": ttl}
        if event_id is not None:
            fields["event_id"] = event_id
        self.relays[relay].event(key, n, message_id, **fields)
        self.model.event(key, event_id or message_id, ttl, n)
        self.last_event = {"key": key, "payload": n, "message_id": message_id, **fields}

    @rule(
        execution=st.sampled_from(["a", "b", "c"]),
        key=st.sampled_from(["k1", "k2"]),
        ttl=st.sampled_from([40, 200]),
    )
    def meet(self, execution: str, key: str, ttl: int) -> None:
        """A wait and an event for one key at the same moment, on two instances.

        With a TTL, either order gives the same result: the event is kept, and the
        wait gets the oldest live event its execution has not received.
        """
        n = next(self.ids)
        url = callback_url(execution, uuid.uuid4().hex)
        barrier = threading.Barrier(2)

        def wait() -> None:
            barrier.wait()
            self.relays[0].wait(url, key, f"w-{n}", ttl=300)

        def event() -> None:
            barrier.wait()
            self.relays[1].event(key, n, f"ev-{n}", ttl_seconds=ttl)

        run_all([wait, event], threads=2)
        self.model.event(key, f"ev-{n}", ttl, n)
        self.model.wait(url, execution, key, self.model.now + 300)

    @precondition(lambda self: self.last_event is not None)
    @rule(relay=st.integers(0, 1))
    def redeliver_event(self, relay: int) -> None:
        assert self.last_event is not None
        event = dict(self.last_event)
        self.relays[relay].event(
            event.pop("key"), event.pop("payload"), event.pop("message_id"), **event
        )

    @precondition(lambda self: self.last_wait is not None)
    @rule()
    def redeliver_wait(self) -> None:
        assert self.last_wait is not None
        relay, url, key, message_id, lifetime = self.last_wait
        relay.wait(url, key, message_id, ttl=lifetime - (self.clock_at - self.start))

    @rule(seconds=st.sampled_from([10, 50]))
    def advance(self, seconds: int) -> None:
        self.clock_at += seconds
        self.model.now += seconds

    @invariant()
    def calls_match_the_model(self) -> None:
        actual = sorted((url, body["payload"]) for url, body in self.client.calls)
        assert actual == sorted(self.model.calls)


@pytest.mark.slow
def test_the_table_holds_against_its_model(firestore: FirestoreEmulator) -> None:
    KeyedWaitsMachine.firestore = firestore
    run_state_machine_as_test(
        KeyedWaitsMachine,
        settings=settings(
            max_examples=8,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        ),
    )


def test_the_model_test_is_not_vacuous() -> None:
    model = KeyedWaitsModel()
    model.event("k", "x", 40, 1)
    model.wait("u1", "a", "k", 100)
    model.wait("u2", "a", "k", 100)
    model.event("k", "x", 40, 2)  # a duplicate id
    model.event("k", "y", 0, 3)
    assert model.calls == [("u1", 1), ("u2", 3)]
