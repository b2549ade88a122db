"""examples/producers/node/publish_result.js with the pinned @google-cloud/pubsub, on the emulator.

node_modules is not committed: scripts/test.sh installs the locked versions with
`npm ci` before the suite. When it is missing (pytest run by hand) the fixture
installs them (about 10 s here). A missing Node or a failed install skips the test
locally and fails it under CI=true.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.processes import child_env
from harness.pubsub_emulator import SHARED_DIR_ENV, PubSubEmulator, in_ci
from tests.producers.golden import (
    EXPECTED_FAILURE_DATA,
    EXPECTED_RESULT_DATA,
    FAIL_ARGS,
    RESULT_JSON,
    SNIPPETS,
    assert_relay_accepts_failure,
    assert_relay_accepts_result,
    job_json,
)
from tests.producers.relay_topic import RelayTopic

pytestmark = pytest.mark.emulator
NODE_DIR = SNIPPETS / "node"
SNIPPET = str(NODE_DIR / "publish_result.js")
PACKAGE = "@google-cloud/pubsub"


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true and the Node snippet cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def installed_version(node: str) -> str | None:
    result = subprocess.run(
        [node, "-p", f"require('{PACKAGE}/package.json').version"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.fixture(scope="module")
def node() -> str:
    """Node with the locked dependencies installed in examples/producers/node/node_modules."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are not on PATH")
    assert node is not None
    assert npm is not None
    # One install at a time: npm ci empties node_modules first, and each xdist process
    # of the run has this fixture.
    with (Path(os.environ[SHARED_DIR_ENV]) / "npm-ci.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_version(node) is None:
            try:
                install = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"],
                    cwd=NODE_DIR,
                    env=child_env(),
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                unavailable("npm ci took more than 600 s")
            if install.returncode != 0:
                unavailable(f"npm ci failed:\n{install.stdout[-2000:]}\n{install.stderr[-2000:]}")
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    assert installed_version(node) == pinned[PACKAGE], "node_modules does not match the pin"
    return node


def test_the_dependency_is_pinned_and_locked() -> None:

    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"][PACKAGE]
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    assert pinned[0].isdigit(), "pin an exact version"
    assert lock["packages"][f"node_modules/{PACKAGE}"]["version"] == pinned
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(NODE_DIR / "node_modules" / "x" / "index.js")],
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert ignored.returncode == 0, "node_modules must be gitignored"


def test_node_snippet_resumes_with_the_result(emulator: PubSubEmulator, node: str) -> None:
    relay = RelayTopic.create(emulator, "node")

    result = relay.run([node, SNIPPET, RESULT_JSON], stdin=job_json())

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit()  # the message id
    data = relay.received_data()
    assert data == EXPECTED_RESULT_DATA
    assert_relay_accepts_result(data)


def test_node_snippet_fails_the_step_on_purpose(emulator: PubSubEmulator, node: str) -> None:
    relay = RelayTopic.create(emulator, "node-fail")

    result = relay.run([node, SNIPPET, "--fail", *FAIL_ARGS], stdin=job_json())

    assert result.returncode == 0, result.stderr
    data = relay.received_data()
    assert data == EXPECTED_FAILURE_DATA
    assert_relay_accepts_failure(data)
