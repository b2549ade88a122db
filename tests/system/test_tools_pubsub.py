"""tools.publish, run as a CLI against the Pub/Sub emulator (replay: test_replay_dead_letters)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callback_relay.message import parse_message_data
from harness.ports import free_port
from harness.processes import child_env
from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import pull, remaining
from tools import publish as publish_tool

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.emulator
URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/p/locations/l/workflows/w"
    "/executions/e/callbacks/c"
)


def run_tool(
    emulator: PubSubEmulator, *args: str, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS...` (args[0] is the module) against the emulator."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=child_env(emulator.env()),
        input=stdin,
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

    # The service refused it: nothing was published, exit 1.
    assert result.returncode == publish_tool.EXIT_PUBLISH_FAILED
    assert "publish to projects/" in result.stderr
    assert "NotFound" in result.stderr
    assert result.stderr.rstrip().endswith("not published")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_publish_cli_publishes_the_bare_url_shorthand_from_stdin_and_exits_0(
    emulator: PubSubEmulator,
) -> None:
    topic = unique_name("publish-bare")
    emulator.create_topic(topic)
    sub = emulator.create_subscription(unique_name("publish-bare-sub"), topic)

    result = run_tool(
        emulator, "tools.publish", "--topic", topic, "--message-file", "-", stdin=URL + "\n"
    )

    assert result.returncode == publish_tool.EXIT_PUBLISHED, result.stderr
    assert "Traceback" not in result.stderr
    printed = json.loads(result.stdout)
    assert printed["message"] == URL + "\n"  # the data as published: not JSON
    (received,) = pull(emulator, sub, expected=1)
    assert received.message.message_id == printed["message_id"]
    assert received.message.data == (URL + "\n").encode()
    assert parse_message_data(received.message.data, max_bytes=65536).callback_url == URL


def test_publish_cli_exits_0_when_stdout_is_gone_after_publishing(
    emulator: PubSubEmulator,
) -> None:
    topic = unique_name("publish-closed-stdout")
    emulator.create_topic(topic)
    sub = emulator.create_subscription(unique_name("publish-closed-stdout-sub"), topic)
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.publish", "--topic", topic, "--url", URL],
        cwd=REPO,
        env=child_env(emulator.env()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # the reader of the result line goes away (`| head -c0`)
    try:
        stderr = process.stderr.read()
        code = process.wait(timeout=60)
    finally:
        process.kill()
        process.stderr.close()

    (received,) = pull(emulator, sub, expected=1)
    assert code == publish_tool.EXIT_PUBLISHED, stderr
    assert f"published {received.message.message_id} to {emulator.topic_path(topic)}" in stderr
    assert "Traceback" not in stderr


def test_publish_cli_exits_4_when_the_service_cannot_be_reached() -> None:
    env = {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{free_port()}", "PUBSUB_PROJECT_ID": "p"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tools.publish", "--topic", "t", "--url", URL, "--timeout", "1"],
        cwd=REPO, env=child_env(env), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    # A request may have left before the connection failed: the outcome is unknown.
    assert result.returncode == publish_tool.EXIT_MAYBE_PUBLISHED, result.stderr
    assert "RetryError" in result.stderr
    assert "it may have been published anyway" in result.stderr
    assert time.monotonic() - started < 20  # --timeout bounds the retries too


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

    assert result.returncode == publish_tool.EXIT_REFUSED
    assert "payload_not_allowed" in result.stderr
    assert remaining(emulator, sub) == []
