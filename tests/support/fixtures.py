"""pytest fixtures shared by system tests; a conftest.py re-exports them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulator import (
    EmulatorUnavailable,
    PubSubEmulator,
    emulator_unavailable_reason,
    in_ci,
    pubsub_emulator,
)


def skip_or_fail(reason: str) -> None:
    """Skip with `reason`, except under CI=true where a missing dependency is a failure."""
    if in_ci():
        pytest.fail(f"CI=true and the Pub/Sub emulator cannot run: {reason}", pytrace=False)
    pytest.skip(f"Pub/Sub emulator unavailable: {reason}")


@pytest.fixture(scope="session")
def process_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where subprocess logs go; pytest keeps the last few runs under its basetemp."""
    return tmp_path_factory.mktemp("process-logs")


@pytest.fixture(scope="session")
def _emulator_session(process_log_dir: Path) -> Iterator[PubSubEmulator | str]:
    # One emulator per session; a failure to start is reported by each test using it.
    reason = emulator_unavailable_reason()
    if reason is not None:
        yield reason
        return
    with contextlib.ExitStack() as stack:
        try:
            running = stack.enter_context(pubsub_emulator(process_log_dir))
        except EmulatorUnavailable as exc:
            yield str(exc)
            return
        yield running


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
