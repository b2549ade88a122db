"""tools.publish, run as a CLI against the Pub/Sub emulator (replay: test_replay_dead_letters)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from callback_relay.message import parse_message_data
from harness.processes import child_env
from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import pull, remaining

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.emulator
URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/p/locations/l/workflows/w"
    "/executions/e/callbacks/c"
)


def run_tool(
    emulator: PubSubEmulator, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS...` (args[0] is the module) against the emulator."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=child_env(emulator.env()),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_publish_cli_sends_a_message_the_relay_accepts(emulator: PubSubEmulator) -> None:
    topic = unique_name("publish")
    emulator.create_topic(topic)
    sub = emulator.create_subscription(unique_name("publish-sub"), topic)
    url = URL

    result = run_tool(
        emulator,
        "tools.publish",
        "--topic",
        topic,
        "--url",
        url,
        "--payload",
        '{"status": "done", "n": 3}',
        "--expires-in",
        "120",
        "--attribute",
        "origin=test",
    )

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["topic"] == emulator.topic_path(topic)
    (received,) = pull(emulator, sub, expected=1)
    assert received.message.message_id == printed["message_id"]
    assert dict(received.message.attributes) == {"origin": "test"}
    data = json.loads(received.message.data)
    assert data["callback_url"] == url
    assert data["payload"] == {"status": "done", "n": 3}
    assert data["method"] == "POST"
    parsed = parse_message_data(received.message.data, max_bytes=65536)
    assert parsed.callback_url == url
    assert parsed.body == b'{"status":"done","n":3}'
    assert parsed.expires_at is not None


def test_publish_cli_reports_a_missing_topic_in_one_line(emulator: PubSubEmulator) -> None:
    result = run_tool(emulator, "tools.publish", "--topic", unique_name("absent"), "--url", URL)

    assert result.returncode == 1
    assert "publish to projects/" in result.stderr
    assert "Traceback" not in result.stderr


# The names PublisherClient.publish(topic, data, ordering_key, retry, timeout, **attrs)
# takes as its own parameters; as attributes they must arrive like any other (and
# survive a replay: test_replay_dead_letters).
CLIENT_PARAMETER_NAMES = ("timeout", "retry", "ordering_key", "topic", "data")


def test_publish_cli_sends_attributes_named_like_client_parameters(
    emulator: PubSubEmulator,
) -> None:
    topic = unique_name("publish-attrs")
    emulator.create_topic(topic)
    sub = emulator.create_subscription(unique_name("publish-attrs-sub"), topic)
    attributes = {name: f"value of {name}" for name in CLIENT_PARAMETER_NAMES}
    attributes["origin"] = "test"

    result = run_tool(
        emulator,
        "tools.publish",
        "--topic",
        topic,
        "--url",
        URL,
        *(arg for key, value in attributes.items() for arg in ("--attribute", f"{key}={value}")),
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    (received,) = pull(emulator, sub, expected=1)
    assert dict(received.message.attributes) == attributes
    assert received.message.ordering_key == ""
    assert parse_message_data(received.message.data, max_bytes=65536).callback_url == URL


def test_publish_cli_never_publishes_a_message_the_relay_would_refuse(
    emulator: PubSubEmulator,
) -> None:
    topic = unique_name("publish-refused")
    emulator.create_topic(topic)
    sub = emulator.create_subscription(unique_name("publish-refused-sub"), topic)

    result = run_tool(
        emulator, "tools.publish", "--topic", topic, "--url", URL, "--method", "GET",
        "--payload", '{"not": "allowed"}',
    )  # fmt: skip

    assert result.returncode == 3
    assert "payload_not_allowed" in result.stderr
    assert remaining(emulator, sub) == []
