"""examples/producers/python/publish_result.py, run as a worker would, on the emulator."""

from __future__ import annotations

import sys

import pytest

from harness.pubsub_emulator import PubSubEmulator
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
SNIPPET = str(SNIPPETS / "python" / "publish_result.py")


def test_python_snippet_resumes_with_the_result(emulator: PubSubEmulator) -> None:
    relay = RelayTopic.create(emulator, "py")

    result = relay.run([sys.executable, SNIPPET, RESULT_JSON], stdin=job_json())

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit()  # the message id
    data = relay.received_data()
    assert data == EXPECTED_RESULT_DATA
    assert_relay_accepts_result(data)


def test_python_snippet_fails_the_step_on_purpose(emulator: PubSubEmulator) -> None:
    relay = RelayTopic.create(emulator, "py-fail")

    result = relay.run([sys.executable, SNIPPET, "--fail", *FAIL_ARGS], stdin=job_json())

    assert result.returncode == 0, result.stderr
    data = relay.received_data()
    assert data == EXPECTED_FAILURE_DATA
    assert_relay_accepts_failure(data)
