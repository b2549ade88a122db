"""Shared fixtures: every test runs against loopback fakes, never Google.

google-auth reads GCE_METADATA_HOST/IP when it is first imported, so the fake
metadata server's address is fixed here, before any test module imports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Imports no google.auth, so the address can be set before anything else imports it.
from harness.fake_metadata_server import FakeMetadataServer

# No Hypothesis example is timed: this machine's load is not the code's speed (a 200 ms
# deadline failed under load). Bounds on time are asserted where they are the behaviour.
settings.register_profile("relay", deadline=None)
settings.load_profile("relay")

# Bound now, served from the first test that needs it: a port only picked here and bound
# later can be taken in between (seen when an emulator started in that window).
_METADATA_SERVER = FakeMetadataServer()
METADATA_HOST = _METADATA_SERVER.host
os.environ["GCE_METADATA_HOST"] = METADATA_HOST
os.environ["GCE_METADATA_IP"] = METADATA_HOST
# No developer credentials may leak into a test: ADC must come from the fake.
os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
os.environ["CLOUDSDK_CONFIG"] = tempfile.mkdtemp(prefix="relay-tests-gcloud-")
for _name in ("WORKFLOWS_EMULATOR_HOST", "ALLOWED_WORKFLOWS", "GOOGLE_CLOUD_PROJECT"):
    os.environ.pop(_name, None)

from harness.fake_workflows_api import FakeWorkflowsApi  # noqa: E402
from harness.firestore_emulator import (  # noqa: E402
    FirestoreEmulator,
    shared_firestore_emulator,
    stop_shared_firestore_emulator,
)
from harness.pubsub_emulator import (  # noqa: E402
    SHARED_DIR_ENV,
    EmulatorUnavailable,
    PubSubEmulator,
    in_ci,
    shared_pubsub_emulator,
    stop_shared_pubsub_emulator,
)

# What the processes of one run share (the Pub/Sub emulator's record and log): made by
# the process pytest was started as, before pytest-xdist starts its workers, which
# inherit the variable; removed by that same process at the end.
_shared_dir_key = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or SHARED_DIR_ENV in os.environ:
        return
    shared = Path(tempfile.mkdtemp(prefix="relay-tests-shared-"))
    os.environ[SHARED_DIR_ENV] = str(shared)
    config.stash[_shared_dir_key] = shared


def pytest_unconfigure(config: pytest.Config) -> None:
    shared = config.stash.get(_shared_dir_key, None)
    if shared is not None:
        stop_shared_pubsub_emulator(shared)
        stop_shared_firestore_emulator(shared)
        shutil.rmtree(shared, ignore_errors=True)
        os.environ.pop(SHARED_DIR_ENV, None)


@pytest.fixture(scope="session")
def metadata_server() -> Iterator[FakeMetadataServer]:
    with _METADATA_SERVER as server:
        yield server


@pytest.fixture
def workflows_api(metadata_server: FakeMetadataServer) -> Iterator[FakeWorkflowsApi]:
    with FakeWorkflowsApi(token_validator=metadata_server.is_valid) as api:
        yield api


@pytest.fixture
def relay_env(
    workflows_api: FakeWorkflowsApi, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., None]:
    """Set the function's environment; call it again to override values."""

    def set_env(**values: Any) -> None:
        defaults = {
            "WORKFLOWS_EMULATOR_HOST": workflows_api.emulator_host,
            "CALLBACK_RETRY_DEADLINE_SECONDS": "2",
            "CALLBACK_CONNECT_TIMEOUT_SECONDS": "1",
            "CALLBACK_READ_TIMEOUT_SECONDS": "1",
        }
        for name, value in {**defaults, **values}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))

    set_env()
    return set_env


# -- the Pub/Sub emulator: one per session ------------------------------------


def skip_or_fail(reason: str, name: str = "Pub/Sub emulator") -> None:
    """Skip with `reason`, except under CI=true where a missing dependency is a failure."""
    if in_ci():
        pytest.fail(f"CI=true and the {name} cannot run: {reason}", pytrace=False)
    pytest.skip(f"{name} unavailable: {reason}")


@pytest.fixture(scope="session")
def process_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where subprocess logs go; pytest keeps the last few runs under its basetemp."""
    return tmp_path_factory.mktemp("process-logs")


@pytest.fixture(scope="session")
def _emulator_session() -> PubSubEmulator | str:
    # One emulator for the whole run, all xdist workers included; why it cannot run
    # (recorded once by shared_pubsub_emulator) is reported by each test using it.
    try:
        return shared_pubsub_emulator(Path(os.environ[SHARED_DIR_ENV]))
    except EmulatorUnavailable as exc:
        return str(exc)


@pytest.fixture
def emulator(_emulator_session: PubSubEmulator | str) -> PubSubEmulator:
    """The session's Pub/Sub emulator; use fresh topic/subscription names per test."""
    if isinstance(_emulator_session, str):
        skip_or_fail(_emulator_session)
    assert isinstance(_emulator_session, PubSubEmulator)
    if not _emulator_session.process.running():
        pytest.fail(
            f"the Pub/Sub emulator died; log {_emulator_session.process.log_path}:\n"
            f"{_emulator_session.process.tail()}"
        )
    return _emulator_session


# -- the Firestore emulator: one per run, like the Pub/Sub one ----------------


@pytest.fixture(scope="session")
def _firestore_session() -> FirestoreEmulator | str:
    try:
        return shared_firestore_emulator(Path(os.environ[SHARED_DIR_ENV]))
    except EmulatorUnavailable as exc:
        return str(exc)


@pytest.fixture
def firestore(_firestore_session: FirestoreEmulator | str) -> FirestoreEmulator:
    """The run's Firestore emulator; use FirestoreEmulator.new_project() for a fresh database."""
    if isinstance(_firestore_session, str):
        skip_or_fail(_firestore_session, "Firestore emulator")
    assert isinstance(_firestore_session, FirestoreEmulator)
    process = _firestore_session.process
    if process is not None and not process.running():
        pytest.fail(f"the Firestore emulator died; log {process.log_path}:\n{process.tail()}")
    return _firestore_session
