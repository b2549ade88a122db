"""workflow.yaml run by the interpreter on the harness's stand-ins: the fake Workflows
callback API (in process and over its /_fake/ control API) and the Pub/Sub emulator.

A small "relay" plays the function's part: it reads the published message and
POSTs the callback with a Bearer token, as the real relay would.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import requests

from harness.fake_workflows_api import FakeWorkflowsApi
from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import pull
from harness.workflow_bindings import (
    HttpCallbacks,
    InProcessCallbacks,
    PubSubConnector,
    run_on_fakes,
)
from harness.workflow_interpreter import ExecutionFailed, LogEntry, WorkflowError


@pytest.fixture
def fake_api() -> Iterator[FakeWorkflowsApi]:
    with FakeWorkflowsApi(project="local-project") as api:
        yield api


def post_callback(message: Mapping[str, Any], body: Any) -> requests.Response:
    return requests.post(
        message["callback_url"],
        json=body,
        headers={"Authorization": "Bearer test-token"},
        timeout=10,
    )


class Relay:
    """A publish binding that answers each message's callback from a thread."""

    def __init__(self, answer: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.answer = answer
        self.messages: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self.replies: list[int] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, topic: str, body: Mapping[str, Any]) -> dict[str, Any]:
        (entry,) = body["messages"]
        message = json.loads(base64.b64decode(entry["data"]))
        self.topics.append(topic)
        self.messages.append(message)
        if self.answer is not None:
            thread = threading.Thread(target=self.reply, args=(message,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return {"messageIds": [f"local-{len(self.messages)}"]}

    def reply(self, message: dict[str, Any]) -> None:
        assert self.answer is not None
        self.replies.append(post_callback(message, self.answer(message)).status_code)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=10)


def test_in_process_fake_resumes_the_workflow_and_ends_the_execution(
    fake_api: FakeWorkflowsApi,
) -> None:
    relay = Relay(answer=lambda message: message["payload"])
    logs: list[LogEntry] = []
    payload = {"order": 42}
    result = run_on_fakes(
        arguments={"payload": payload, "timeout": 10, "topic": "relay"},
        callbacks=InProcessCallbacks(fake_api),
        publish=relay,
        log=logs.append,
    )
    relay.join()
    assert relay.replies == [200]
    assert result["status"] == "RESUMED"
    assert result["body"] == payload
    assert result["callback_url"] == relay.messages[0]["callback_url"]
    assert relay.topics == ["projects/local-project/topics/relay"]
    assert [entry.payload["event"] for entry in logs] == ["callback_published", "callback_received"]
    # The run ended the execution: a late callback is refused, as after a real execution.
    assert post_callback(relay.messages[0], payload).status_code == 404


def test_http_control_api_error_body_fails_with_a_callback_error(
    fake_api: FakeWorkflowsApi,
) -> None:
    error = {"code": "REFUSED", "message": "no stock", "details": None}
    relay = Relay(answer=lambda message: {"error": error})
    with pytest.raises(ExecutionFailed) as failed:
        run_on_fakes(
            arguments={"timeout": 10, "topic": "relay"},
            callbacks=HttpCallbacks(fake_api.host),
            publish=relay,
        )
    relay.join()
    assert failed.value.tags == ["CallbackError"]
    assert failed.value.error["code"] == "REFUSED"
    assert failed.value.error["message"] == "no stock"


def test_http_control_api_timeout_is_a_timed_out_result(fake_api: FakeWorkflowsApi) -> None:
    relay = Relay(answer=None)  # nobody calls back
    result = run_on_fakes(
        arguments={"timeout": 0.5, "topic": "relay"},
        callbacks=HttpCallbacks(fake_api.host),
        publish=relay,
    )
    assert result["status"] == "TIMED_OUT"
    assert result["message"] == "no callback within 0.5 s on projects/local-project/topics/relay"
    assert post_callback(relay.messages[0], {}).status_code == 404


class RefusingClient:
    """A Publisher client that must not be reached."""

    def publish(self, **_: Any) -> Any:
        raise AssertionError("an invalid message must be refused before the API call")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"data": "not base64!"}, "base64"),
        ({"data": "", "attributes": {"count": 1}}, "strings"),
        ("a string", "map"),
    ],
)
def test_connector_refuses_what_the_publish_api_refuses(message: Any, reason: str) -> None:
    connector = PubSubConnector(RefusingClient())
    with pytest.raises(WorkflowError) as refused:
        connector("projects/p/topics/t", {"messages": [message]})
    assert refused.value.tags == ["HttpError"]
    assert refused.value.value["code"] == 400
    assert reason in refused.value.value["message"]


@pytest.mark.emulator
def test_connector_publishes_attributes_as_a_map_on_the_emulator(
    emulator: PubSubEmulator,
) -> None:
    topic = emulator.create_topic(unique_name("interp-attrs"))
    subscription = emulator.create_subscription(unique_name("interp-attrs-sub"), topic)
    # Names the batching client would take for its own keyword arguments.
    attributes = {"timeout": "1", "retry": "no", "ordering_key": "k", "topic": "t", "data": "d"}
    with PubSubConnector.connect(emulator.address) as connector:
        response = connector(
            topic,
            {
                "messages": [
                    {"data": base64.b64encode(b"payload").decode(), "attributes": attributes}
                ]
            },
        )
    (received,) = pull(emulator, subscription, expected=1)
    assert response == {"messageIds": [received.message.message_id]}
    assert received.message.data == b"payload"
    assert dict(received.message.attributes) == attributes


@pytest.mark.emulator
def test_connector_reports_a_missing_topic_as_an_http_error(emulator: PubSubEmulator) -> None:
    with (
        PubSubConnector.connect(emulator.address) as connector,
        pytest.raises(WorkflowError) as failed,
    ):
        connector(emulator.topic_path(unique_name("absent")), {"messages": [{"data": ""}]})
    assert failed.value.tags == ["HttpError"]
    assert failed.value.value["code"] == 404


@pytest.mark.emulator
def test_workflow_yaml_through_the_emulator_and_the_fake(
    emulator: PubSubEmulator, fake_api: FakeWorkflowsApi
) -> None:
    topic_id = unique_name("interp-relay")
    topic = emulator.create_topic(topic_id)
    subscription = emulator.create_subscription(unique_name("interp-relay-sub"), topic)
    replies: list[int] = []

    def relay_from_subscription() -> None:
        (received,) = pull(emulator, subscription, expected=1)
        message = json.loads(received.message.data)
        assert dict(received.message.attributes)["content_type"] == "application/json"
        replies.append(post_callback(message, {"relayed": message["payload"]}).status_code)

    thread = threading.Thread(target=relay_from_subscription, daemon=True)
    thread.start()
    with PubSubConnector.connect(emulator.address) as connector:
        result = run_on_fakes(
            arguments={"payload": {"n": 1}, "timeout": 20},
            callbacks=InProcessCallbacks(fake_api),
            publish=connector,
            project_id=emulator.project,
            environment={"RELAY_TOPIC": topic_id},
        )
    thread.join(timeout=10)
    assert replies == [200]
    assert result["status"] == "RESUMED"
    assert result["body"] == {"relayed": {"n": 1}}
    assert result["message_id"]
