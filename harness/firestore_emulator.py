"""The Firestore emulator from the Google Cloud SDK, shared by the processes of a test run.

`gcloud emulators firestore start --host-port=127.0.0.1:PORT` runs Firestore in
Native mode on loopback, REST and gRPC on one port; clients find it through
FIRESTORE_EMULATOR_HOST. Like the Pub/Sub emulator (harness.pubsub_emulator), the
first process of a run that needs it starts it under a file lock, and the process
that started the run stops it (tests/conftest.py).

The emulator serves many projects at once: each test uses a project id of its own,
so no test sees another's documents. It does no TTL deletion.

Policy: tests that need it are marked `emulator`; under CI=true a missing emulator
fails them, elsewhere they skip with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from harness.ports import LOOPBACK, free_port
from harness.pubsub_emulator import (
    EmulatorUnavailable,
    SharedEmulatorProcess,
    emulator_env,
    sdk_emulator_missing,
    shared_start,
    start_detached,
    stop_detached,
    unique_name,
)

READY_LINE = r"Dev App Server is now running"
_RECORD = "firestore-emulator.json"


def firestore_unavailable_reason() -> str | None:
    """Why the Firestore emulator cannot run here, or None."""
    return sdk_emulator_missing("cloud-firestore-emulator", "the Firestore emulator")


@dataclasses.dataclass(frozen=True)
class FirestoreEmulator:
    address: str  # host:port, as FIRESTORE_EMULATOR_HOST names it
    # The process when this run started it; None for one found at FIRESTORE_EMULATOR_HOST.
    process: SharedEmulatorProcess | None = None

    def env(self) -> dict[str, str]:
        return {"FIRESTORE_EMULATOR_HOST": self.address}

    @staticmethod
    def new_project() -> str:
        """A project id of its own: a fresh, empty database on the shared emulator."""
        return unique_name("fs")

    def documents(self, project: str, collection: str) -> list[dict[str, Any]]:
        """Every document of `collection` (for tests that look at what was stored)."""
        url = (
            f"http://{self.address}/v1/projects/{project}/databases/(default)/documents/"
            f"{collection}?pageSize=1000"
        )
        reply = requests.get(url, headers={"Authorization": "Bearer owner"}, timeout=10)
        reply.raise_for_status()
        return list(reply.json().get("documents", []))


def _argv(port: int) -> list[str]:
    return [
        "gcloud",
        "emulators",
        "firestore",
        "start",
        f"--host-port={LOOPBACK}:{port}",
        "--quiet",
    ]


def _start(directory: Path, ready_timeout: float) -> dict[str, Any]:
    reason = firestore_unavailable_reason()
    if reason is not None:
        raise EmulatorUnavailable(reason)
    port = free_port()
    env = emulator_env("FIRESTORE_EMULATOR_HOST")
    started = start_detached(
        _argv(port),
        directory / f"firestore-emulator-{port}.log",
        READY_LINE,
        port,
        ready_timeout,
        "the Firestore emulator",
        env,
    )
    _warm_up(f"{LOOPBACK}:{port}")
    return started


def _warm_up(address: str, budget_seconds: float = 10.0) -> None:
    """Run the store's kinds of request until they are fast: a cold emulator's first ones
    take most of a second (its JIT), which a test with a short deadline reads as Firestore
    being down. Done once, under the start lock, before any process uses it."""
    base = f"http://{address}/v1/projects/warm-up/databases/(default)/documents"
    headers = {"Authorization": "Bearer owner"}
    give_up = time.monotonic() + budget_seconds
    for round_number in range(50):
        began = time.monotonic()
        name = f"projects/warm-up/databases/(default)/documents/warm/{round_number}"
        create: dict[str, Any] = {
            "update": {"name": name, "fields": {"n": {"integerValue": "1"}}},
            "currentDocument": {"exists": False},
        }
        requests.post(f"{base}:commit", json={"writes": [create]}, headers=headers, timeout=10)
        got = requests.post(
            f"{base}:batchGet", json={"documents": [name]}, headers=headers, timeout=10
        ).json()
        update_time = got[0].get("found", {}).get("updateTime")
        update: dict[str, Any] = {
            "update": {"name": name, "fields": {"n": {"integerValue": "2"}}},
            "currentDocument": {"updateTime": update_time},
        }
        requests.post(f"{base}:commit", json={"writes": [update]}, headers=headers, timeout=10)
        now = time.monotonic()
        if now - began < 0.05 or now > give_up:
            return


def shared_firestore_emulator(directory: Path, ready_timeout: float = 90.0) -> FirestoreEmulator:
    """The one Firestore emulator of every process that shares `directory`."""
    found = shared_start(directory / _RECORD, lambda: _start(directory, ready_timeout))
    process = SharedEmulatorProcess(
        found["pid"], found["host"], found["port"], Path(found["log_path"])
    )
    return FirestoreEmulator(f"{process.host}:{process.port}", process)


def stop_shared_firestore_emulator(directory: Path) -> None:
    stop_detached(directory / _RECORD)


@contextlib.contextmanager
def firestore_emulator(log_dir: Path, ready_timeout: float = 90.0) -> Iterator[FirestoreEmulator]:
    """The emulator at FIRESTORE_EMULATOR_HOST when one is set (left running), else one of
    its own (the benchmark, the local example), stopped on exit."""
    running = os.environ.get("FIRESTORE_EMULATOR_HOST", "").strip()
    if running:
        yield FirestoreEmulator(running)
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield shared_firestore_emulator(log_dir, ready_timeout)
    finally:
        stop_shared_firestore_emulator(log_dir)


if __name__ == "__main__":  # python -m harness.firestore_emulator: is it installed?
    print(firestore_unavailable_reason() or "ok")
    sys.exit(0 if firestore_unavailable_reason() is None else 1)
