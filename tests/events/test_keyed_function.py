"""Which topic a delivery came from, proven on the real functions-framework server.

The relay runs under functions-framework (gunicorn) with keyed waits on. The Pub/Sub
emulator pushes each topic's messages to ``FUNCTION_URL/projects/P/topics/T``:
functions-framework converts the raw push into a CloudEvent whose source it takes
from that path (``_PUBSUB_TOPIC_REQUEST_PATH`` in functions_framework/
event_conversion.py). So a message on the relay topic is always from "relay",
whatever it says, and a message on an EVENT_TOPICS topic is an event of that topic.
Eventarc's binary CloudEvent carries the same source in ``ce-source``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import cloudevents
from harness.fake_metadata_server import FakeMetadataServer
from harness.fake_workflows_api import FakeWorkflowsApi
from harness.firestore_emulator import FirestoreEmulator
from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import publish
from harness.relay_function import relay_function

pytestmark = pytest.mark.emulator


def wait_message(url: str, key: str, source: str) -> bytes:
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
    return json.dumps(
        {
            "kind": "wait",
            "callback_url": url,
            "key": key,
            "source": source,
            "expires_at": cloudevents.rfc3339(expires),
        }
    ).encode()


def eventually(predicate: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def function(
    process_log_dir: Path,
    metadata_server: FakeMetadataServer,
    workflows_api: FakeWorkflowsApi,
    firestore: FirestoreEmulator,
    emulator: PubSubEmulator,
) -> Iterator[tuple[str, str, str]]:
    """(function URL, events topic id, project) with keyed waits on."""
    orders = unique_name("orders-shipped")
    project = firestore.new_project()
    env = {
        "EVENT_STORE": "firestore",
        "GOOGLE_CLOUD_PROJECT": project,
        "FIRESTORE_EMULATOR_HOST": firestore.address,
        "EVENT_TOPICS": json.dumps({orders: "order:{attributes.orderId}"}),
    }
    with relay_function(
        process_log_dir,
        metadata_host=metadata_server.host,
        workflows_host=workflows_api.emulator_host,
        extra_env=env,
        threads=4,
    ) as (_, url):
        yield url, orders, project


def test_push_deliveries_are_known_by_their_topic(
    function: tuple[str, str, str], emulator: PubSubEmulator, workflows_api: FakeWorkflowsApi
) -> None:
    url, orders, _ = function
    relay = unique_name("relay")
    subscriptions = []
    for topic in (relay, orders):
        path = emulator.create_topic(topic)
        subscriptions.append(
            emulator.create_subscription(unique_name("push"), topic, push_endpoint=f"{url}/{path}")
        )
    try:
        callback = workflows_api.create_callback(workflows_api.create_execution())
        publish(emulator, relay, wait_message(callback, "order:42", orders))
        # On the relay topic an event is "relay"'s, whatever key it names: not the wait's.
        forged = {"kind": "event", "key": "order:42", "payload": {"forged": True}}
        publish(emulator, relay, json.dumps(forged).encode())
        publish(emulator, orders, json.dumps({"carrier": "ups"}).encode(), orderId="42")
        assert eventually(lambda: workflows_api.calls_to(callback))
        body = workflows_api.await_callback(callback, 5)["http_request"]["body"]
        assert body["source"] == orders
        assert body["payload"] == {"data": {"carrier": "ups"}, "attributes": {"orderId": "42"}}
        time.sleep(0.3)  # the forged event, had it woken the wait, would have arrived by now
        assert len(workflows_api.calls_to(callback)) == 1
    finally:
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                emulator.delete_subscription(subscription)


def test_an_eventarc_delivery_is_known_by_its_ce_source(
    function: tuple[str, str, str], workflows_api: FakeWorkflowsApi
) -> None:
    url, orders, _ = function
    callback = workflows_api.create_callback(workflows_api.create_execution())

    def post(data: bytes, topic: str, message_id: str, **attributes: str) -> int:
        headers, body = cloudevents.eventarc_binary(
            data, message_id, attributes=attributes, topic=f"projects/p/topics/{topic}"
        )
        return requests.post(url + "/", json=body, headers=headers, timeout=30).status_code

    assert post(wait_message(callback, "order:7", orders), "relay-topic", "m-1") == 200
    assert post(b'{"n": 1}', orders, "m-2", orderId="7") == 200
    body = workflows_api.await_callback(callback, 5)["http_request"]["body"]
    assert (body["source"], body["key"], body["event_id"]) == (orders, "order:7", "m-2")
