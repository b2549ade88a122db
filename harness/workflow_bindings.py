"""Bindings of the local Workflows interpreter to the harness's stand-ins.

- Callbacks: `events.create_callback_endpoint` / `events.await_callback` on the fake
  Workflows callback API (harness.fake_workflows_api), in process or through its
  HTTP control API under /_fake/. One workflow run is one execution of the fake;
  it ends when the run ends, so a late callback gets 404 as on Google Cloud
  (https://cloud.google.com/workflows/docs/creating-callback-endpoints).
- Publishing: the `googleapis.pubsub.v1.projects.topics.publish` connector on a
  Pub/Sub API, the emulator when PUBSUB_EMULATOR_HOST is set. Like the connector
  (https://cloud.google.com/workflows/docs/reference/googleapis/pubsub/v1/projects.topics/publish)
  it sends the request body's messages in one Publish call, attributes as a map:
  the batching client's publish(topic, data, **attributes) would take an attribute
  named "timeout" or "retry" for one of its own arguments.

    callbacks = InProcessCallbacks(fake_api)      # or HttpCallbacks("127.0.0.1:PORT")
    with PubSubConnector.connect() as publish:
        result = run_on_fakes(Path("workflow.yaml"), {"payload": {...}},
                              callbacks=callbacks, publish=publish)

"The message the workflow would publish", for tests and tools that need the exact
bytes without a relay: `published_by_workflow(...)` runs the workflow with a publish
binding that only records, so its await times out (at once on OfflineCallbacks, after
`timeout` seconds on the fake) and the workflow ends as TIMED_OUT.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, Self

import requests

from harness.fake_workflows_api import FakeWorkflowsApi
from harness.workflow_interpreter import (
    Bindings,
    ExecutionFailed,
    LogEntry,
    WorkflowError,
    builtin_environment,
    error_map,
    run_workflow,
)
from harness.workflow_interpreter.api import WorkflowSource

DEMO_WORKFLOW = "callback-relay-demo"
WORKFLOW_YAML = Path(__file__).resolve().parent.parent / "workflow.yaml"


class CallbackControl(Protocol):
    """What the interpreter needs from a Workflows callback API."""

    def create_execution(self, workflow: str) -> str: ...

    def create_callback(self, execution: str, method: str) -> str: ...

    def await_callback(self, url: str, timeout: float) -> dict[str, Any] | None:
        """The callback request, or None after `timeout` seconds."""
        ...

    def end_execution(self, execution: str) -> None: ...


@dataclasses.dataclass
class InProcessCallbacks:
    """The fake Workflows API running in this process."""

    api: FakeWorkflowsApi

    def create_execution(self, workflow: str) -> str:
        return self.api.create_execution(workflow)

    def create_callback(self, execution: str, method: str) -> str:
        return self.api.create_callback(execution, method)

    def await_callback(self, url: str, timeout: float) -> dict[str, Any] | None:
        try:
            return self.api.await_callback(url, timeout)
        except TimeoutError:
            return None

    def end_execution(self, execution: str) -> None:
        self.api.end_execution(execution)


class HttpCallbacks:
    """The fake Workflows API in another process, through its /_fake/ control API."""

    def __init__(self, host: str, session: requests.Session | None = None) -> None:
        self.origin = host if "://" in host else f"http://{host}"
        self.session = session or requests.Session()

    def _post(self, path: str, body: Any, timeout: float = 10.0) -> requests.Response:
        return self.session.post(f"{self.origin}/_fake/{path}", json=body, timeout=timeout)

    def create_execution(self, workflow: str) -> str:
        # The control API makes an execution together with a first callback; that
        # callback stays unused, as an endpoint the workflow never created would.
        reply = self._post("executions", {"workflow": workflow})
        reply.raise_for_status()
        return str(reply.json()["execution"])

    def create_callback(self, execution: str, method: str) -> str:
        reply = self._post("callbacks", {"execution": execution, "method": method})
        reply.raise_for_status()
        return str(reply.json()["callback_url"])

    def await_callback(self, url: str, timeout: float) -> dict[str, Any] | None:
        reply = self._post("await", {"callback_url": url, "timeout": timeout}, timeout + 10)
        if reply.status_code == 408:
            return None
        reply.raise_for_status()
        request: dict[str, Any] = reply.json()
        return request

    def end_execution(self, execution: str) -> None:
        self._post("end", {"execution": execution}).raise_for_status()


def _connector_error(code: int, message: str) -> WorkflowError:
    # Connector failures reach the workflow as HttpError maps with the HTTP status.
    return WorkflowError({**error_map("HttpError", message), "code": code})


class PubSubConnector:
    """The Pub/Sub publish connector over a Publisher API client."""

    def __init__(self, client: Any, timeout: float = 30.0) -> None:
        self.client = client
        self.timeout = timeout

    @classmethod
    def connect(cls, emulator_host: str | None = None) -> Self:
        """A client for the emulator (argument or PUBSUB_EMULATOR_HOST), else for Google."""
        # The generated (non-batching) client: publish(topic, messages) takes attributes
        # inside each PubsubMessage, as a map.
        import grpc  # type: ignore[import-untyped]  # no stubs; only insecure_channel is used
        from google.pubsub_v1 import PublisherClient
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        host = emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST")
        if host:
            transport = PublisherGrpcTransport(channel=grpc.insecure_channel(host))
            return cls(PublisherClient(transport=transport))
        return cls(PublisherClient())

    def __call__(self, topic: str, body: Mapping[str, Any]) -> dict[str, Any]:
        from google.api_core import exceptions as api_exceptions
        from google.pubsub_v1 import PubsubMessage

        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _connector_error(400, "body.messages must be a non-empty list")
        try:
            response = self.client.publish(
                topic=topic,
                messages=[_pubsub_message(PubsubMessage, i, m) for i, m in enumerate(messages)],
                timeout=self.timeout,
            )
        except api_exceptions.GoogleAPICallError as exc:
            raise _connector_error(int(exc.code or 500), str(exc.message)) from None
        return {"messageIds": list(response.message_ids)}

    def close(self) -> None:
        self.client.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _pubsub_message(message_type: Any, index: int, message: Any) -> Any:
    """A PubsubMessage from one REST-shaped message, refusing what the API would refuse."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _connector_error(400, f"{where} must be a map")
    try:
        data = base64.b64decode(message.get("data", ""), validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise _connector_error(400, f"{where}.data must be base64") from None
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise _connector_error(400, f"{where}.attributes must map strings to strings")
    ordering_key = message.get("orderingKey", "")
    return message_type(data=data, attributes=attributes, ordering_key=ordering_key)


def _execution_parts(execution: str) -> dict[str, str]:
    """projects/P/locations/L/workflows/W/executions/E -> {projects: P, ...}."""
    parts = execution.split("/")
    return dict(zip(parts[::2], parts[1::2], strict=True))


def run_on_fakes(
    workflow: WorkflowSource = WORKFLOW_YAML,
    arguments: Any = None,
    *,
    callbacks: CallbackControl,
    publish: Callable[[str, Mapping[str, Any]], Mapping[str, Any]],
    workflow_id: str = DEMO_WORKFLOW,
    environment: Mapping[str, str] | None = None,
    project_id: str | None = None,
    now: Callable[[], float] = time.time,
    log: Callable[[LogEntry], None] = lambda entry: None,
    entry: str = "main",
) -> Any:
    """Run one execution of `workflow` on the fakes and return its result.

    The built-in GOOGLE_CLOUD_* variables come from the fake's execution name;
    `project_id` overrides the project (set it to the emulator's project so that a
    bare topic id resolves to a topic that exists there). `environment` holds the
    user-defined variables (RELAY_TOPIC, ...). Raises ExecutionFailed like
    run_workflow; the execution is ended either way.
    """
    execution = callbacks.create_execution(workflow_id)
    parts = _execution_parts(execution)
    variables = {
        **builtin_environment(
            project_id=project_id or parts["projects"],
            location=parts["locations"],
            workflow_id=parts["workflows"],
            execution_id=parts["executions"],
        ),
        **(environment or {}),
    }

    def create_callback_endpoint(method: str) -> dict[str, Any]:
        return {"url": callbacks.create_callback(execution, method)}

    def await_callback(callback: Mapping[str, Any], timeout: float) -> dict[str, Any] | None:
        return callbacks.await_callback(str(callback["url"]), timeout)

    bindings = Bindings(
        create_callback_endpoint=create_callback_endpoint,
        await_callback=await_callback,
        publish=publish,
        environment=variables,
        now=now,
        log=log,
    )
    try:
        return run_workflow(workflow, arguments, bindings=bindings, entry=entry)
    finally:
        callbacks.end_execution(execution)


@dataclasses.dataclass(frozen=True)
class PublishedMessage:
    """One message as the workflow handed it to the publish connector, decoded."""

    topic: str
    data: bytes
    attributes: dict[str, str]
    message_id: str

    @property
    def message(self) -> Any:
        """The JSON value in `data` (the relay's callback message)."""
        return json.loads(self.data)


def decode_publish_body(
    topic: str, body: Mapping[str, Any], ids: list[str]
) -> list[PublishedMessage]:
    """The connector's request body as PublishedMessages, refusing what the API would refuse."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _connector_error(400, "body.messages must be a non-empty list")
    if len(messages) != len(ids):
        raise ValueError(f"{len(messages)} messages published, {len(ids)} ids returned")
    decoded = []
    for index, (message, message_id) in enumerate(zip(messages, ids, strict=True)):
        checked = _pubsub_message(_RestMessage, index, message)
        decoded.append(PublishedMessage(topic, checked.data, checked.attributes, message_id))
    return decoded


@dataclasses.dataclass(frozen=True)
class _RestMessage:
    data: bytes
    attributes: dict[str, str]
    ordering_key: str


class RecordingPublisher:
    """A publish binding that records every message, then hands the body to `forward`.

    Without `forward` nothing leaves the process: the message ids are local ones.
    """

    def __init__(
        self, forward: Callable[[str, Mapping[str, Any]], Mapping[str, Any]] | None = None
    ) -> None:
        self.forward = forward
        self.published: list[PublishedMessage] = []

    def __call__(self, topic: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.forward is not None:
            response = self.forward(topic, body)
            ids = [str(i) for i in response.get("messageIds", [])]
        else:
            count = len(body.get("messages") or [])
            ids = [f"local-{len(self.published) + i + 1}" for i in range(count)]
            response = {"messageIds": ids}
        self.published.extend(decode_publish_body(topic, body, ids))
        return response


class OfflineCallbacks:
    """Callbacks with Google's URL shape and no server: every await times out at once.

    For running the publishing half of a workflow where no fake runs (static checks).
    """

    def __init__(
        self,
        project: str = "local-project",
        location: str = "us-central1",
        execution_id: str = "local-execution",
        origin: str = "https://workflowexecutions.googleapis.com",
    ) -> None:
        self.project = project
        self.location = location
        self.execution_id = execution_id
        self.origin = origin
        self.created: list[str] = []

    def create_execution(self, workflow: str) -> str:
        return (
            f"projects/{self.project}/locations/{self.location}/workflows/{workflow}"
            f"/executions/{self.execution_id}"
        )

    def create_callback(self, execution: str, method: str) -> str:
        url = f"{self.origin}/v1/{execution}/callbacks/c-{len(self.created) + 1}"
        self.created.append(url)
        return url

    def await_callback(self, url: str, timeout: float) -> dict[str, Any] | None:
        return None

    def end_execution(self, execution: str) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class WorkflowPublication:
    """What one run of the workflow published, and how the run ended.

    `result` is what it returned; `error` the error it failed with (run on
    `await_via_pubsub` itself, the timeout is a CallbackTimeout error), else None.
    """

    published: PublishedMessage
    result: Any
    error: Any = None

    @property
    def callback_url(self) -> str:
        return str(self.published.message["callback_url"])


def published_by_workflow(
    arguments: Any = None,
    *,
    workflow: WorkflowSource = WORKFLOW_YAML,
    callbacks: CallbackControl | None = None,
    workflow_id: str = DEMO_WORKFLOW,
    environment: Mapping[str, str] | None = None,
    project_id: str | None = None,
    now: Callable[[], float] = time.time,
    entry: str = "main",
) -> WorkflowPublication:
    """Run the workflow with a publish binding that only records: the exact message it publishes.

    Nothing is delivered, so the await times out: at once on OfflineCallbacks (the
    default), after the workflow's `timeout` on a fake, whose callback then belongs
    to an ended execution, as after a real timeout. The workflow must publish once.
    """
    recorder = RecordingPublisher()
    result: Any = None
    error: Any = None
    try:
        result = run_on_fakes(
            workflow,
            arguments,
            callbacks=callbacks if callbacks is not None else OfflineCallbacks(),
            publish=recorder,
            workflow_id=workflow_id,
            environment=environment,
            project_id=project_id,
            now=now,
            entry=entry,
        )
    except ExecutionFailed as failed:
        if not recorder.published:
            raise
        error = failed.error
    if len(recorder.published) != 1:
        raise ValueError(f"the workflow published {len(recorder.published)} messages, not 1")
    return WorkflowPublication(recorder.published[0], result, error)
