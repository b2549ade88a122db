"""The Pub/Sub emulator from the Google Cloud SDK, started and stopped by tests.

`gcloud beta emulators pubsub start` runs a Python launcher that starts Java;
both live in one process group that `ManagedProcess.stop` kills as a whole.
Clients find the emulator through PUBSUB_EMULATOR_HOST.

Policy: emulator tests are marked `emulator`. When CI=true a missing emulator
is a failure; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from harness.ports import LOOPBACK, free_port, port_is_open
from harness.processes import ProcessStartError, child_env, managed_process, signal_group

READY_LINE = r"Server started, listening on (\d+)"
DEFAULT_PROJECT = "local-project"
_counter = itertools.count(1)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def sdk_emulator_missing(component: str, name: str) -> str | None:
    """Why the Cloud SDK's emulator `component` (its folder under platform/) cannot run
    here, or None when gcloud, Java and the component are present."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return f"gcloud is not on PATH (install the Google Cloud SDK with {component})"
    if shutil.which("java") is None:
        return f"java is not on PATH ({name} needs Java 11+)"
    sdk_root = Path(os.path.realpath(gcloud)).parent.parent
    if not (sdk_root / "platform" / component).is_dir():
        return f"the {component} component is not installed under {sdk_root}/platform"
    return None


def emulator_unavailable_reason() -> str | None:
    """Why the Pub/Sub emulator cannot run here, or None."""
    return sdk_emulator_missing("pubsub-emulator", "the Pub/Sub emulator")


def unique_name(prefix: str) -> str:
    """A fresh resource name: emulator topics and subscriptions outlive a test."""
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


class EmulatorProcess(Protocol):
    """What a test needs of the emulator's process: is it up, and its log."""

    @property
    def log_path(self) -> Path: ...

    def running(self) -> bool: ...

    def tail(self, count: int = 40) -> str: ...


class PubSubEmulator:
    """A running emulator plus helpers to make topics and subscriptions on it."""

    def __init__(self, process: EmulatorProcess, host: str, port: int, project: str) -> None:
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
        """projects/P/topics/T from a short id; a full name is returned as it is."""
        return topic if topic.startswith("projects/") else f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        """projects/P/subscriptions/S from a short id; a full name is returned as it is."""
        if subscription.startswith("projects/"):
            return subscription
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
            "topic": self.topic_path(topic),
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
                dead_letter_topic=self.topic_path(dead_letter_topic),
                max_delivery_attempts=max_delivery_attempts or 5,
            )
        subscriber = self.subscriber()
        try:
            subscriber.create_subscription(request=request)
        finally:
            subscriber.close()
        return str(request["name"])

    def delete_subscription(self, subscription: str) -> None:
        """Delete it: a push subscription stops pushing to an endpoint that is gone."""
        subscriber = self.subscriber()
        try:
            subscriber.delete_subscription(
                request={"subscription": self.subscription_path(subscription)}
            )
        finally:
            subscriber.close()


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
    with managed_process(
        "pubsub-emulator",
        _argv(port, project),
        log_dir / f"pubsub-emulator-{port}.log",
        env=_env(),
        ready_line=READY_LINE,
        ready_port=(LOOPBACK, port),
        ready_timeout=ready_timeout,
        stop_grace=10.0,
    ) as process:
        yield PubSubEmulator(process, LOOPBACK, port, project)


def _argv(port: int, project: str) -> list[str]:
    return [
        "gcloud",
        "beta",
        "emulators",
        "pubsub",
        "start",
        f"--host-port={LOOPBACK}:{port}",
        f"--project={project}",
        "--quiet",
    ]


# The emulators run for a test run or a benchmark, not for days: the JVM's quick compiler
# alone and one garbage-collector thread halve their CPU (measured over the test suite:
# 25 s of CPU for the two emulators, 12 s with these), which two cores feel.
EMULATOR_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def emulator_env(drop: str) -> dict[str, str]:
    """An emulator's environment: without `drop` (an emulator's own address variable,
    which would point it at itself), with EMULATOR_JVM_OPTIONS added to the JVM's."""
    env = child_env(drop=(drop,))
    env["JAVA_TOOL_OPTIONS"] = f"{env.get('JAVA_TOOL_OPTIONS', '')} {EMULATOR_JVM_OPTIONS}".strip()
    return env


def _env() -> dict[str, str]:
    # Keep the emulator away from any real project configuration of this shell.
    return emulator_env("PUBSUB_EMULATOR_HOST")


class EmulatorUnavailable(RuntimeError):
    """gcloud, Java or the pubsub-emulator component is missing."""


# -- one emulator shared by the processes of a test run (pytest-xdist workers) ---

# The environment variable naming the directory the processes of one test run share
# (tests/conftest.py makes it before pytest-xdist starts its workers).
SHARED_DIR_ENV = "RELAY_TESTS_SHARED_DIR"
_RECORD = "pubsub-emulator.json"


@dataclasses.dataclass(frozen=True)
class SharedEmulatorProcess:
    """An emulator another process of this run may have started: known by its record."""

    pid: int
    host: str
    port: int
    log_path: Path

    def running(self) -> bool:
        return port_is_open(self.host, self.port)

    def tail(self, count: int = 40) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(lines[-count:])


def shared_pubsub_emulator(
    directory: Path, project: str = DEFAULT_PROJECT, ready_timeout: float = 90.0
) -> PubSubEmulator:
    """The one emulator of every process that shares `directory`.

    The first caller starts it, in a session of its own and writing its log to a
    file, so that it outlives that caller; the others read its record. A failure to
    start is recorded too, so that each caller reports it without trying again.
    Whoever made `directory` stops it with stop_shared_pubsub_emulator(directory).
    Each emulator start costs about 3 s of CPU, and each test process of a run
    used to start its own.
    """
    found = shared_start(
        directory / _RECORD, lambda: _start_detached(directory, project, ready_timeout)
    )
    process = SharedEmulatorProcess(
        found["pid"], found["host"], found["port"], Path(found["log_path"])
    )
    return PubSubEmulator(process, process.host, process.port, found["project"])


def shared_start(record: Path, start: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The record of what `start` started, started once by whichever process comes first.

    A lock file beside `record` makes the processes of one run take turns; a failure
    to start is recorded too, so that each caller reports it without trying again.
    """
    with record.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not record.exists():
            try:
                found: dict[str, Any] = start()
            except EmulatorUnavailable as exc:
                found = {"unavailable": str(exc)}
            except ProcessStartError as exc:
                found = {"failed": str(exc)}
            record.write_text(json.dumps(found), encoding="utf-8")
        found = json.loads(record.read_text(encoding="utf-8"))
    if "unavailable" in found:
        raise EmulatorUnavailable(found["unavailable"])
    if "failed" in found:
        raise ProcessStartError(found["failed"])
    return found


def _start_detached(directory: Path, project: str, ready_timeout: float) -> dict[str, Any]:
    reason = emulator_unavailable_reason()
    if reason is not None:
        raise EmulatorUnavailable(reason)
    port = free_port()
    found = start_detached(
        _argv(port, project),
        directory / f"pubsub-emulator-{port}.log",
        READY_LINE,
        port,
        ready_timeout,
        "the Pub/Sub emulator",
        _env(),
    )
    return {**found, "project": project}


def start_detached(
    argv: list[str],
    log_path: Path,
    ready_line: str,
    port: int,
    ready_timeout: float,
    what: str,
    env: dict[str, str],
) -> dict[str, Any]:
    """Start `argv` in a session of its own, logging to `log_path`, until it is ready.

    Ready: its log shows `ready_line` and `port` accepts connections. Returns the
    record that SharedEmulatorProcess and stop_detached read (pid, host, port, log).
    """
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    started = SharedEmulatorProcess(popen.pid, LOOPBACK, port, log_path)
    ready = re.compile(ready_line)
    deadline = time.monotonic() + ready_timeout
    while not (ready.search(log_path.read_text(errors="replace")) and started.running()):
        if popen.poll() is not None or time.monotonic() > deadline:
            _stop_group(popen.pid, LOOPBACK, port)
            raise ProcessStartError(
                f"{what} did not start (exit {popen.poll()}); log {log_path}:\n{started.tail()}"
            )
        time.sleep(0.05)
    return {"pid": popen.pid, "host": LOOPBACK, "port": port, "log_path": str(log_path)}


def stop_shared_pubsub_emulator(directory: Path) -> None:
    """Stop the emulator shared_pubsub_emulator(directory) started, if it did."""
    stop_detached(directory / _RECORD)


def stop_detached(record: Path) -> None:
    """Stop what start_detached started, as named by the record written for it."""
    if not record.exists():
        return
    found = json.loads(record.read_text(encoding="utf-8"))
    if "pid" in found:
        _stop_group(found["pid"], found["host"], found["port"])
    record.unlink()


def _stop_group(pgid: int, host: str, port: int, grace: float = 10.0) -> None:
    """SIGTERM the launcher and its Java child, until the port closes; then SIGKILL."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while port_is_open(host, port) and time.monotonic() < deadline:
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)
