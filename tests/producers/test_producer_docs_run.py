"""docs/producers.md: the commands it prints, run as printed.

- the dry run of a message with `"method": "post"`, whose output the doc shows;
- a Node and a Python worker, written from the doc (its snippets), each resuming the
  example workflow, failing it on purpose, and having a broken message failed fast,
  through the `scripts/run-local.sh --example worker --worker-command ...` lines it prints.

The run-local lines use the suite's shared emulator (PUBSUB_EMULATOR_HOST), as the script
does whenever that variable is set; nothing else about them changes.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from harness.processes import child_env
from harness.pubsub_emulator import PubSubEmulator
from tests.doc_blocks import REPO, blocks, commands, doc_block
from tests.system.test_run_local import script_env
from tests.system.test_worker_example import failure, resumed_after_ms

GUIDE = REPO / "docs" / "producers.md"
NODE_WORKERS = commands(doc_block(GUIDE, "producers-node-worker"))
PYTHON_WORKERS = commands(doc_block(GUIDE, "producers-python-worker"))


def test_the_dry_run_prints_what_the_doc_shows() -> None:
    block = doc_block(GUIDE, "producers-dry-run")
    ran = subprocess.run(
        ["bash", "-c", block],
        cwd=REPO,
        env=child_env(drop=("WORKFLOWS_EMULATOR_HOST", "ALLOWED_WORKFLOWS")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 3, ran.stdout + ran.stderr
    # The block right after the command block is its output.
    every = blocks(GUIDE)
    index = next(i for i, b in enumerate(every) if b.text == block)
    assert every[index + 1].language == "text"
    assert ran.stderr == every[index + 1].text
    assert ran.stdout == ""


def test_the_guide_prints_three_runs_per_worker() -> None:
    for lines, worker in ((NODE_WORKERS, "worker.mjs"), (PYTHON_WORKERS, "worker.py")):
        assert len(lines) == 3
        assert all(
            line.startswith("scripts/run-local.sh --example worker --worker-command")
            for line in lines
        )
        assert all(worker in line for line in lines)
        assert [mode_of(line) for line in lines] == ["work", "fail", "broken"]


def mode_of(line: str) -> str:
    return "fail" if "--fail" in line else "broken" if "--broken" in line else "work"


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.parametrize("line", NODE_WORKERS + PYTHON_WORKERS)
def test_a_worker_written_from_the_guide_runs_as_printed(
    line: str, emulator: PubSubEmulator
) -> None:
    if "node " in line:
        node_ready()
    # A user's shell: no metadata server named (the tests' fake is not the worker's).
    env = {
        k: v
        for k, v in script_env(emulator).items()
        if k not in ("GCE_METADATA_HOST", "GCE_METADATA_IP")
    }
    ran = subprocess.run(
        ["bash", "-c", line],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = ran.stdout + ran.stderr
    mode = mode_of(line)
    # The worker's own line is a hop: it ran, and said what it did.
    assert re.search(rf"worker\s+{mode} .*relay_message_id", ran.stdout), output
    assert "MetadataLookupWarning" not in output
    if mode == "work":
        assert ran.returncode == 0, output
        returned = json.loads(ran.stdout.split("--- workflow result ---")[1].split("\n\n")[0])
        assert returned["status"] == "DONE"
        assert returned["result"] == {"text": "HELLO FROM THE WORKER EXAMPLE", "words": 5}
        assert '"outcome": "delivered"' in ran.stdout
        return
    assert ran.returncode == 1, output
    error = failure(ran.stdout)
    assert error["tags"] == ["CallbackError"]
    if mode == "fail":
        assert error["code"] == "WORKER_FAILED"
        assert '"outcome": "delivered"' in ran.stdout
    else:
        assert error["code"] == "INVALID_MESSAGE"
        assert "payloa" in str(error["message"])
        assert '"outcome": "failed_fast"' in ran.stdout
    # Within seconds, not at the 30 s timeout.
    assert resumed_after_ms(ran.stdout) < 15_000


def node_ready() -> None:
    """The doc's `npm install` is scripts/test.sh's `npm ci` of the same lock, done before."""
    from tests.producers.test_node_snippet import NODE_DIR, unavailable

    if not (NODE_DIR / "node_modules" / "@google-cloud" / "pubsub").is_dir():
        unavailable(f"no node_modules in {NODE_DIR}: scripts/test.sh installs them (npm ci)")
