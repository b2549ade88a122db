"""workflow.yaml's await_event, executed by the local interpreter against a keyed relay.

The subworkflow's own steps create the callback, publish the wait and await it;
the published message goes to the relay (keyed waits on, Firestore emulator),
which calls the fake Workflows API, whose callback the step awaits.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import time
from collections.abc import Mapping
from typing import Any

import pytest

from harness.workflow_bindings import (
    WORKFLOW_YAML,
    InProcessCallbacks,
    decode_publish_body,
    run_on_fakes,
)
from harness.workflow_interpreter import ExecutionFailed
from tests.events.keyed_relay import KeyedRelay

pytestmark = pytest.mark.emulator
_ids = itertools.count(1)


def run_await_event(keyed: KeyedRelay, **arguments: Any) -> Any:
    """One execution of await_event; what it publishes is delivered to the relay."""
    published: list[str] = []

    def publish(topic: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        ids = [f"wf-{next(_ids)}" for _ in body["messages"]]
        for message in decode_publish_body(topic, body, ids):
            published.append(topic)
            keyed.deliver(message.data, message.message_id)
        return {"messageIds": ids}

    result = run_on_fakes(
        WORKFLOW_YAML,
        arguments,
        callbacks=InProcessCallbacks(keyed.api),
        publish=publish,
        workflow_id="orders",
        entry="await_event",
    )
    assert published == ["projects/test-project/topics/workflows-callback-relay"]
    return result


def test_await_event_returns_the_event(keyed: KeyedRelay) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(run_await_event, keyed, key="order:42", timeout=20)
        while not keyed.firestore.documents(keyed.project, "relay_waits"):
            assert not waiting.done(), waiting.result()
            time.sleep(0.02)
        keyed.event("order:42", {"status": "shipped"}, event_id="ship-1")
        result = waiting.result(timeout=20)
    assert result["payload"] == {"status": "shipped"}
    assert (result["key"], result["source"], result["event_id"]) == ("order:42", "relay", "ship-1")
    assert result["published_at"]


def test_await_event_after_the_event_returns_at_once(keyed: KeyedRelay) -> None:
    keyed.event("gs://incoming/report.csv", {"size": 3})
    result = run_await_event(keyed, key="gs://incoming/report.csv", timeout=20)
    assert result["payload"] == {"size": 3}


def test_await_event_times_out_with_callback_timeout(keyed: KeyedRelay) -> None:
    with pytest.raises(ExecutionFailed) as failed:
        run_await_event(keyed, key="never", timeout=0.2)
    assert failed.value.error["tags"] == ["CallbackTimeout", "TimeoutError"]
    assert "never" in failed.value.error["message"]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"key": "k" * 1025}, "key_too_long"),
        ({"key": "k", "source": "no-such-topic"}, "unknown_source"),
    ],
)
def test_a_refused_wait_raises_callback_error_at_once(
    keyed: KeyedRelay, arguments: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ExecutionFailed) as failed:
        run_await_event(keyed, timeout=30, **arguments)
    error = failed.value.error
    assert error["tags"] == ["CallbackError"]
    assert (error["code"], error["details"]["reason"]) == ("INVALID_MESSAGE", reason)
