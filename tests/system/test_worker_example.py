"""examples/worker/ end to end: its workflow.yaml executed, worker.py as its own process.

scripts/run-local.sh --example worker runs the job-and-worker pattern on the Pub/Sub
emulator: the workflow publishes a job on a jobs topic and waits on its callback;
worker.py pulls the job, does the work and publishes the result on the relay topic;
the relay function resumes the callback. Each run is given a 120 s timeout, so an
answer within seconds proves the workflow did not wait for it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from harness.pubsub_emulator import PubSubEmulator
from tests.doc_blocks import REPO, commands, doc_block
from tests.system.test_run_local import script_env

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
# docs/producers.md prints these three runs; they run as printed (the default 30 s timeout).
PRINTED = commands(doc_block(REPO / "docs" / "producers.md", "producers-worker-example"))
TIMEOUT = 30


def run_example(
    mode: str, emulator: PubSubEmulator
) -> tuple[subprocess.CompletedProcess[str], float]:
    (line,) = [
        line
        for line in PRINTED
        if ("--worker-mode" not in line if mode == "work" else f"--worker-mode {mode}" in line)
    ]
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "-c", line],
        cwd=REPO,
        env=script_env(emulator),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return result, time.monotonic() - started


def resumed_after_ms(stdout: str) -> float:
    """When the waiting step was resumed, in ms since the workflow started."""
    summary = stdout.split("--- every hop, in time order ---")[1]
    match = re.search(r"^\s*([0-9.]+) ms\s+resumed\s", summary, re.M)
    assert match is not None, summary
    return float(match[1])


def failure(stdout: str) -> dict[str, object]:
    block = stdout.split("--- workflow failed ---")[1].split("\n\n")[0]
    error: dict[str, object] = json.loads(block)
    return error


def test_a_job_is_done_and_its_result_resumes_the_workflow(emulator: PubSubEmulator) -> None:
    # The emulator fixture applies the policy (skip here, fail under CI=true); the
    # script uses that emulator (PUBSUB_EMULATOR_HOST) rather than starting one.
    result, _ = run_example("work", emulator)

    assert result.returncode == 0, result.stdout + result.stderr
    returned = result.stdout.split("--- workflow result ---")[1].split("\n\n")[0]
    assert json.loads(returned)["result"] == {"text": "HELLO FROM THE WORKER EXAMPLE", "words": 5}
    assert json.loads(returned)["status"] == "DONE"
    assert re.search(r"worker\s+resumed .*relay_message_id", result.stdout)
    assert '"outcome": "delivered"' in result.stdout


def test_a_worker_failing_the_step_on_purpose_reaches_the_workflow(
    emulator: PubSubEmulator,
) -> None:
    result, _ = run_example("fail", emulator)

    assert result.returncode == 1, result.stdout + result.stderr
    error = failure(result.stdout)
    assert error["tags"] == ["CallbackError"]
    assert error["code"] == "WORKER_FAILED"
    assert resumed_after_ms(result.stdout) < 15_000


def test_a_broken_result_fails_the_step_fast_instead_of_timing_out(
    emulator: PubSubEmulator,
) -> None:
    result, seconds = run_example("broken", emulator)

    assert result.returncode == 1, result.stdout + result.stderr
    error = failure(result.stdout)
    assert error["tags"] == ["CallbackError"]
    assert error["code"] == "INVALID_MESSAGE"
    assert "payloa" in str(error["message"])
    assert resumed_after_ms(result.stdout) < 15_000
    assert seconds < TIMEOUT
    assert '"outcome": "failed_fast"' in result.stdout
