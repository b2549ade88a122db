"""docs/running-locally.md: "Running the function by hand" works as written.

The doc's shell block is run in two halves, with free ports in place of the doc's
8080-8082: the first starts the stand-ins and the function (left running in the
block's process group), the second creates a callback, POSTs the CloudEvent and reads
what the execution received.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from harness.ports import free_port, wait_for_port
from harness.processes import child_env
from tests.doc_blocks import doc_block

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "running-locally.md"
SPLIT = "# a callback to resume"


def by_hand_block() -> str:
    return doc_block(DOC, "running-locally-by-hand")


@pytest.mark.slow
def test_running_the_function_by_hand_as_documented(tmp_path: Path) -> None:
    block = by_hand_block()
    ports = {"8080": free_port(), "8081": free_port(), "8082": free_port()}
    for documented, port in ports.items():
        block = block.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{port}")
        block = block.replace(f"--port {documented}", f"--port {port}")
    start, use = block.split(SPLIT, 1)
    env = child_env(drop=("PUBSUB_EMULATOR_HOST", "GCE_METADATA_HOST", "GCE_METADATA_IP"))
    with (tmp_path / "processes.log").open("w") as log:
        starter = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", start],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        for port in ports.values():
            assert wait_for_port("127.0.0.1", port, 60), (tmp_path / "processes.log").read_text()
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", SPLIT + use],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        # The stand-ins and the function were started with & in the block's group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(starter.pid, signal.SIGTERM)
        starter.wait(30)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.startswith("HTTP/1.1 200"), ran.stdout
    received = json.loads(ran.stdout.strip().splitlines()[-1])
    assert received["http_request"]["body"] == {"order": 42}
    assert received["http_request"]["headers"]["Idempotency-Key"] == "by-hand-1"
    output = (tmp_path / "processes.log").read_text()
    assert '"outcome": "delivered"' in output, output
