"""The Pub/Sub emulator from the Google Cloud SDK, started and stopped by tests.

`gcloud beta emulators pubsub start` runs a Python launcher that starts Java;
both live in one process group that `ManagedProcess.stop` kills as a whole.
Clients find the emulator through PUBSUB_EMULATOR_HOST.

Policy: emulator tests are marked `emulator`. When CI=true a missing emulator
is a failure; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.ports import LOOPBACK, free_port
from harness.processes import ManagedProcess, child_env, managed_process

READY_LINE = r"Server started, listening on (\d+)"
DEFAULT_PROJECT = "local-project"
_counter = itertools.count(1)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def emulator_unavailable_reason() -> str | None:
    """Why the emulator cannot run here, or None when gcloud, Java and the jar are present."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return "gcloud is not on PATH (install the Google Cloud SDK with the pubsub-emulator)"
    if shutil.which("java") is None:
        return "java is not on PATH (the Pub/Sub emulator needs Java 11+)"
    sdk_root = Path(os.path.realpath(gcloud)).parent.parent
    if not (sdk_root / "platform" / "pubsub-emulator").is_dir():
        return f"the pubsub-emulator component is not installed under {sdk_root}/platform"
    return None


def unique_name(prefix: str) -> str:
    """A fresh resource name: emulator topics and subscriptions outlive a test."""
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


class PubSubEmulator:
    """A running emulator plus helpers to make topics and subscriptions on it."""

    def __init__(self, process: ManagedProcess, host: str, port: int, project: str) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.project = project

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.address, "PUBSUB_PROJECT_ID": self.project}

    # Clients are created with the emulator address in the environment, which is
    # how google-cloud-pubsub switches to an insecure channel and no credentials.
    def publisher(self) -> Any:
        from google.cloud import pubsub_v1

        with _environment(self.env()):
            return pubsub_v1.PublisherClient()

    def subscriber(self) -> Any:
        from google.cloud import pubsub_v1

        with _environment(self.env()):
            return pubsub_v1.SubscriberClient()

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription}"

    def create_topic(self, topic: str) -> str:
        path = self.topic_path(topic)
        publisher = self.publisher()
        try:
            publisher.create_topic(name=path)
        finally:
            publisher.transport.close()
        return path

    def create_subscription(
        self,
        subscription: str,
        topic: str,
        *,
        push_endpoint: str | None = None,
        ack_deadline_seconds: int = 10,
        minimum_backoff_seconds: float | None = None,
        maximum_backoff_seconds: float | None = None,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int | None = None,
        enable_message_ordering: bool = False,
    ) -> str:
        """Create a pull (or push, with push_endpoint) subscription on `topic`."""
        from google.cloud import pubsub_v1

        request: dict[str, Any] = {
            "name": self.subscription_path(subscription),
            "topic": topic if topic.startswith("projects/") else self.topic_path(topic),
            "ack_deadline_seconds": ack_deadline_seconds,
            "enable_message_ordering": enable_message_ordering,
        }
        if push_endpoint is not None:
            request["push_config"] = pubsub_v1.types.PushConfig(push_endpoint=push_endpoint)
        if minimum_backoff_seconds is not None or maximum_backoff_seconds is not None:
            request["retry_policy"] = pubsub_v1.types.RetryPolicy(
                minimum_backoff=_duration(minimum_backoff_seconds or 10.0),
                maximum_backoff=_duration(maximum_backoff_seconds or 600.0),
            )
        if dead_letter_topic is not None:
            request["dead_letter_policy"] = pubsub_v1.types.DeadLetterPolicy(
                dead_letter_topic=(
                    dead_letter_topic
                    if dead_letter_topic.startswith("projects/")
                    else self.topic_path(dead_letter_topic)
                ),
                max_delivery_attempts=max_delivery_attempts or 5,
            )
        subscriber = self.subscriber()
        try:
            subscriber.create_subscription(request=request)
        finally:
            subscriber.close()
        return str(request["name"])


def _duration(seconds: float) -> datetime.timedelta:
    # proto-plus marshals timedelta into google.protobuf.Duration.
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def pubsub_emulator(
    log_dir: Path, project: str = DEFAULT_PROJECT, ready_timeout: float = 90.0
) -> Iterator[PubSubEmulator]:
    """Start the emulator on a free loopback port; stop it and its Java child on exit."""
    reason = emulator_unavailable_reason()
    if reason is not None:
        raise EmulatorUnavailable(reason)
    port = free_port()
    argv = [
        "gcloud",
        "beta",
        "emulators",
        "pubsub",
        "start",
        f"--host-port={LOOPBACK}:{port}",
        f"--project={project}",
        "--quiet",
    ]
    # Keep the emulator away from any real project configuration of this shell.
    env = child_env(drop=("PUBSUB_EMULATOR_HOST",))
    with managed_process(
        "pubsub-emulator",
        argv,
        log_dir / f"pubsub-emulator-{port}.log",
        env=env,
        ready_line=READY_LINE,
        ready_port=(LOOPBACK, port),
        ready_timeout=ready_timeout,
        stop_grace=10.0,
    ) as process:
        yield PubSubEmulator(process, LOOPBACK, port, project)


class EmulatorUnavailable(RuntimeError):
    """gcloud, Java or the pubsub-emulator component is missing."""
