"""scripts/run-local.sh, the README's one command, run as a user would."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from harness.ports import port_is_open
from harness.processes import child_env
from harness.pubsub_emulator import PubSubEmulator

REPO = Path(__file__).resolve().parents[2]
HOPS = ["callback", "published", "delivered", "token", "callback", "resumed"]


def run_local(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "run-local.sh"), *args],
        cwd=REPO,
        env=child_env({"SKIP_VENV": "1"}, drop=("PUBSUB_EMULATOR_HOST",)),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def check_demo(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.split("--- every hop, in time order ---")[1]
    names = [
        line.split()[2]
        for line in summary.split("--- workflow result ---")[0].splitlines()
        if line.strip()
    ]
    hops = [n for n in names if n in HOPS]
    assert sorted(hops) == sorted(HOPS)
    assert hops[0] == "callback"
    assert hops[-1] == "resumed"
    assert '"status": "RESUMED"' in result.stdout
    assert '"outcome": "delivered"' in result.stdout
    # Every process it started is gone: the function's port is closed again.
    match = re.search(r"relay function\s+http://127\.0\.0\.1:(\d+)/", result.stdout)
    assert match is not None
    assert not port_is_open("127.0.0.1", int(match[1]))


@pytest.mark.slow
def test_run_local_without_the_emulator_delivers_directly() -> None:
    result = run_local("--no-emulator", "--payload", '{"from": "test"}')

    check_demo(result)
    assert "Pub/Sub emulator       not available (--no-emulator)" in result.stdout
    assert '"from": "test"' in result.stdout


@pytest.mark.slow
@pytest.mark.emulator
def test_run_local_with_the_emulator(emulator: PubSubEmulator) -> None:
    # The fixture applies the emulator policy (skip here, fail under CI=true);
    # run-local.sh starts an emulator of its own.
    result = run_local()

    check_demo(result)
    assert "Eventarc CloudEvent for message" in result.stdout
