"""One Pub/Sub emulator for every process of a test run: started once, stopped by its owner."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.ports import port_is_open
from harness.pubsub_emulator import (
    EmulatorUnavailable,
    emulator_unavailable_reason,
    in_ci,
    shared_pubsub_emulator,
    stop_shared_pubsub_emulator,
)

pytestmark = pytest.mark.emulator


def test_callers_at_once_share_one_emulator_until_it_is_stopped(tmp_path: Path) -> None:
    if (reason := emulator_unavailable_reason()) is not None:
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        # Three callers race, as pytest-xdist workers do (flock excludes each open()).
        with ThreadPoolExecutor(max_workers=3) as pool:
            emulators = list(pool.map(lambda _: shared_pubsub_emulator(tmp_path), range(3)))
        assert len({e.address for e in emulators}) == 1
        assert len(list(tmp_path.glob("pubsub-emulator-*.log"))) == 1
        emulator = emulators[0]
        assert emulator.process.running()
        topic = emulator.create_topic("shared")
        assert topic == f"projects/{emulator.project}/topics/shared"
    finally:
        stop_shared_pubsub_emulator(tmp_path)
    assert not port_is_open(emulator.host, emulator.port)
    assert not emulator.process.running()
    assert not (tmp_path / "pubsub-emulator.json").exists()
    stop_shared_pubsub_emulator(tmp_path)  # twice is harmless


def test_an_emulator_that_cannot_run_is_reported_to_every_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no gcloud, no java

    for _ in range(2):
        with pytest.raises(EmulatorUnavailable, match="gcloud is not on PATH"):
            shared_pubsub_emulator(tmp_path)

    (reason,) = json.loads((tmp_path / "pubsub-emulator.json").read_text()).values()
    assert reason.startswith("gcloud is not on PATH")
    stop_shared_pubsub_emulator(tmp_path)
