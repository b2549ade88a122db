"""tools.publish and tools.replay_dead_letters, run as CLIs against the Pub/Sub emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from callback_relay.message import parse_message_data
from harness.processes import child_env
from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import drained, publish, pull

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.emulator
URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/p/locations/l/workflows/w"
    "/executions/e/callbacks/c"
)


def run_tool(
    emulator: PubSubEmulator, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
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


def _dead_letter_setup(emulator: PubSubEmulator) -> tuple[str, str, str, str]:
    dead_topic = unique_name("dead")
    relay_topic = unique_name("relay")
    emulator.create_topic(dead_topic)
    emulator.create_topic(relay_topic)
    dead_sub = emulator.create_subscription(unique_name("dead-sub"), dead_topic)
    relay_sub = emulator.create_subscription(unique_name("relay-sub"), relay_topic)
    return dead_topic, dead_sub, relay_topic, relay_sub


def test_replay_moves_every_message_with_data_and_attributes(emulator: PubSubEmulator) -> None:
    dead_topic, dead_sub, relay_topic, relay_sub = _dead_letter_setup(emulator)
    sent = {}
    for n in range(5):
        data = json.dumps({"callback_url": f"https://x/cb/{n}", "payload": {"n": n}}).encode()
        publish(emulator, dead_topic, data, attempt=str(n), kind="poison")
        sent[data] = {"attempt": str(n), "kind": "poison"}

    result = run_tool(
        emulator,
        "tools.replay_dead_letters",
        "--subscription",
        dead_sub,
        "--topic",
        relay_topic,
        "--max-messages",
        "50",
        "--pull-timeout",
        "1",
    )

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["pulled"], summary["replayed"], summary["failed"]) == (5, 5, 0)
    assert result.stderr.count("replayed ") == 5
    arrived = pull(emulator, relay_sub, expected=5)
    assert {m.message.data: dict(m.message.attributes) for m in arrived} == sent
    assert drained(emulator, dead_sub)


def test_replay_stops_at_max_messages_and_leaves_the_rest(emulator: PubSubEmulator) -> None:
    dead_topic, dead_sub, relay_topic, relay_sub = _dead_letter_setup(emulator)
    for n in range(4):
        publish(emulator, dead_topic, f"https://x/cb/{n}".encode())

    result = run_tool(
        emulator,
        "tools.replay_dead_letters",
        "--subscription",
        dead_sub,
        "--topic",
        relay_topic,
        "--max-messages",
        "2",
        "--batch-size",
        "1",
        "--pull-timeout",
        "1",
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["replayed"] == 2
    assert len(pull(emulator, relay_sub, expected=2)) == 2
    assert len(pull(emulator, dead_sub, expected=2, timeout=20)) == 2


def test_replay_keeps_a_message_whose_publish_fails(emulator: PubSubEmulator) -> None:
    dead_topic, dead_sub, _relay_topic, _relay_sub = _dead_letter_setup(emulator)
    publish(emulator, dead_topic, b"https://x/cb/keep-me", kind="poison")

    result = run_tool(
        emulator,
        "tools.replay_dead_letters",
        "--subscription",
        dead_sub,
        "--topic",
        unique_name("no-such-topic"),
        "--pull-timeout",
        "1",
    )

    assert result.returncode == 1
    assert json.loads(result.stdout)["failed"] == 1
    assert "FAILED to re-publish" in result.stderr
    (kept,) = pull(emulator, dead_sub, expected=1, timeout=20)
    assert kept.message.data == b"https://x/cb/keep-me"
    assert dict(kept.message.attributes) == {"kind": "poison"}


def test_replay_of_an_empty_subscription_exits_quickly(emulator: PubSubEmulator) -> None:
    _dead_topic, dead_sub, relay_topic, _relay_sub = _dead_letter_setup(emulator)

    result = run_tool(
        emulator,
        "tools.replay_dead_letters",
        "--subscription",
        dead_sub,
        "--topic",
        relay_topic,
        "--pull-timeout",
        "1",
    )

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["pulled"] == 0
    assert summary["seconds"] < 15


# The names PublisherClient.publish(topic, data, ordering_key, retry, timeout, **attrs)
# takes as its own parameters; as attributes they must arrive like any other.
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
    assert pull(emulator, sub, expected=1, timeout=3) == []
