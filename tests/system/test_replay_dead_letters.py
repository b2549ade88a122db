"""tools.replay_dead_letters on the Pub/Sub emulator: nothing lost, nothing stranded.

`remaining()` and `drained()` count a message the tool pulled and never acked or
nacked (they read the subscription's acknowledgment state through a snapshot);
`available_now()` shows that a message left behind was handed straight back.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import (
    available_now,
    dead_letter,
    drained,
    publish_message,
    pull,
    remaining,
)
from tests.system.test_tools_pubsub import CLIENT_PARAMETER_NAMES
from tests.system.test_tools_pubsub import run_tool as run_cli
from tools import replay_dead_letters as tool

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.emulator

DEAD_LETTER_ATTRIBUTES = {
    "CloudPubSubDeadLetterSourceSubscription",
    "CloudPubSubDeadLetterSourceSubscriptionProject",
    "CloudPubSubDeadLetterSourceDeliveryCount",
    "CloudPubSubDeadLetterSourceTopicPublishTime",
}


@dataclasses.dataclass
class Queues:
    """The relay's topic and trigger subscription, with its dead-letter topic and queue."""

    relay_topic: str
    relay_sub: str
    dead_topic: str
    dead_sub: str


def make_queues(emulator: PubSubEmulator, *, ordering: bool = False) -> Queues:
    relay_topic = emulator.create_topic(unique_name("relay"))
    dead_topic = emulator.create_topic(unique_name("dead"))
    dead_sub = emulator.create_subscription(unique_name("dead-sub"), dead_topic)
    relay_sub = emulator.create_subscription(
        unique_name("relay-sub"),
        relay_topic,
        dead_letter_topic=dead_topic,
        max_delivery_attempts=5,
        enable_message_ordering=ordering,
    )
    return Queues(relay_topic, relay_sub, dead_topic, dead_sub)


def put_dead_letter(
    emulator: PubSubEmulator,
    queues: Queues,
    data: bytes,
    attributes: dict[str, str] | None = None,
    ordering_key: str = "",
) -> str:
    """A message on the dead-letter topic as the emulator forwards one (see the first
    test): the source subscription as a short id, its project in its own attribute."""
    forwarded = {
        "CloudPubSubDeadLetterSourceSubscription": queues.relay_sub.rsplit("/", 1)[1],
        "CloudPubSubDeadLetterSourceSubscriptionProject": emulator.project,
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceTopicPublishTime": "2026-01-02T03:04:05.678Z",
        **(attributes or {}),
    }
    return publish_message(emulator, queues.dead_topic, data, forwarded, ordering_key)


def run_tool(
    emulator: PubSubEmulator, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        emulator, "tools.replay_dead_letters", "--pull-timeout", "1", *args, timeout=timeout
    )


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(result.stdout))


def test_replays_real_dead_letters_to_their_source_with_every_attribute(
    emulator: PubSubEmulator,
) -> None:
    queues = make_queues(emulator)
    sent: dict[bytes, dict[str, str]] = {}
    for n in range(3):
        data = json.dumps({"callback_url": f"https://x/cb/{n}", "n": n}).encode()
        attributes = {name: f"{name}-{n}" for name in CLIENT_PARAMETER_NAMES} | {"n": str(n)}
        publish_message(emulator, queues.relay_topic, data, attributes)
        sent[data] = attributes
    forwarded = dead_letter(emulator, queues.relay_sub, queues.dead_sub, expected=3)
    relay_sub_id = queues.relay_sub.rsplit("/", 1)[1]
    # What the emulator adds when it dead-letters: the names the tool relies on.
    for item in forwarded:
        attributes = dict(item.message.attributes)
        assert set(attributes) - set(sent[item.message.data]) == DEAD_LETTER_ATTRIBUTES
        assert attributes["CloudPubSubDeadLetterSourceSubscription"] == relay_sub_id

    result = run_tool(emulator, "--subscription", queues.dead_sub, "--topic", queues.relay_topic)

    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["replayed"], summary["failed"], summary["left_on_subscription"]) == (3, 0, 0)
    assert summary["stopped"] == "drained"
    arrived = pull(emulator, queues.relay_sub, expected=3)
    assert sorted(m.message.data for m in arrived) == sorted(sent)
    for item in arrived:
        attributes = dict(item.message.attributes)
        original = sent[item.message.data]
        assert {k: attributes[k] for k in original} == original
        assert attributes["relay_replay_count"] == "1"
        replayed_at = datetime.datetime.fromisoformat(attributes["relay_replayed_at"])
        assert abs(datetime.datetime.now(datetime.UTC) - replayed_at).total_seconds() < 120
        assert attributes["relay_dead_letter_source_subscription"] == relay_sub_id
        assert attributes["relay_dead_letter_source_delivery_count"] == "5"
        assert not any(k.startswith("CloudPubSubDeadLetter") for k in attributes)
    assert drained(emulator, queues.dead_sub)


def test_refuses_a_topic_that_no_subscription_reads(emulator: PubSubEmulator) -> None:
    queues = make_queues(emulator)
    ids = {put_dead_letter(emulator, queues, f"keep-{n}".encode()) for n in range(2)}
    unread = emulator.create_topic(unique_name("unread"))

    result = run_tool(emulator, "--subscription", queues.dead_sub, "--topic", unread)
    missing = run_tool(
        emulator, "--subscription", queues.dead_sub, "--topic", unique_name("no-such-topic")
    )

    assert result.returncode == tool.EXIT_REFUSED
    assert "no subscription reads" in result.stderr
    assert result.stdout == ""
    assert missing.returncode == tool.EXIT_REFUSED
    assert "does not exist" in missing.stderr
    # Never pulled, so they are there at once.
    kept = available_now(emulator, queues.dead_sub)
    assert {m.message.message_id for m in kept} == ids


def test_refuses_to_replay_into_the_dead_letter_topic_itself(emulator: PubSubEmulator) -> None:
    queues = make_queues(emulator)
    put_dead_letter(emulator, queues, b"would-loop")

    result = run_tool(
        emulator, "--subscription", queues.dead_sub, "--topic", queues.dead_topic, "--force"
    )

    assert result.returncode == tool.EXIT_REFUSED
    assert "would loop" in result.stderr
    assert len(available_now(emulator, queues.dead_sub)) == 1


def test_a_topic_other_than_the_source_is_named_and_refused_unless_forced(
    emulator: PubSubEmulator,
) -> None:
    queues = make_queues(emulator)
    other_topic = emulator.create_topic(unique_name("other"))
    other_sub = emulator.create_subscription(unique_name("other-sub"), other_topic)
    ids = {put_dead_letter(emulator, queues, f"m{n}".encode()) for n in range(2)}

    refused = run_tool(emulator, "--subscription", queues.dead_sub, "--topic", other_topic)

    assert refused.returncode == tool.EXIT_MESSAGES_LEFT
    assert f"replay it with --topic {queues.relay_topic}" in refused.stderr
    assert summary_of(refused)["failed"] == 2
    # Nacked at the end of the run: back at once, and nothing went to the other topic.
    kept = available_now(emulator, queues.dead_sub)
    assert {m.message.message_id for m in kept} == ids
    assert remaining(emulator, other_sub) == []

    forced = run_tool(
        emulator, "--subscription", queues.dead_sub, "--topic", other_topic, "--force"
    )

    assert forced.returncode == 0, forced.stderr
    assert summary_of(forced)["replayed"] == 2
    assert len(pull(emulator, other_sub, expected=2)) == 2


def test_one_message_that_cannot_be_republished_does_not_block_the_rest(
    emulator: PubSubEmulator, tmp_path: Path
) -> None:
    queues = make_queues(emulator)
    good = {}
    bad_id = ""
    for n in range(5):
        data = f"message-{n}".encode()
        if n == 2:
            # 95 + Pub/Sub's 4 is allowed; with the replay's 2 it is over the 100 limit.
            too_many = {f"a{i}": "v" for i in range(95)}
            bad_id = put_dead_letter(emulator, queues, data, too_many)
        else:
            good[put_dead_letter(emulator, queues, data)] = data

    result = run_tool(
        emulator, "--subscription", queues.dead_sub, "--topic", queues.relay_topic,
        "--batch-size", "10",
    )  # fmt: skip

    assert result.returncode == tool.EXIT_MESSAGES_LEFT
    summary = summary_of(result)
    assert (summary["replayed"], summary["failed"]) == (4, 1)
    (left,) = [m for m in summary["messages"] if m["action"] == "left"]
    assert left["message_id"] == bad_id
    assert "over the 100 allowed" in left["reason"]
    assert f"1 message(s) stayed on {queues.dead_sub}: {bad_id}" in result.stderr
    arrived = pull(emulator, queues.relay_sub, expected=4)
    assert sorted(m.message.data for m in arrived) == sorted(good.values())
    # Exactly the bad one stays: an un-acked good message would show up here too.
    assert [m.message.message_id for m in remaining(emulator, queues.dead_sub)] == [bad_id]

    export = tmp_path / "poison.jsonl"
    exported = run_tool(
        emulator, "--subscription", queues.dead_sub, "--export", str(export),
        "--message-id", bad_id,
    )  # fmt: skip

    assert exported.returncode == 0, exported.stderr
    (line,) = [json.loads(text) for text in export.read_text().splitlines()]
    assert line["message_id"] == bad_id
    assert base64.b64decode(line["data_b64"]) == b"message-2"
    assert line["attributes"]["a94"] == "v"
    assert line["attributes"]["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert drained(emulator, queues.dead_sub)


def test_skipped_messages_stay_and_hold_back_their_ordering_key(emulator: PubSubEmulator) -> None:
    queues = make_queues(emulator, ordering=True)
    skipped = put_dead_letter(emulator, queues, b"k1", ordering_key="K")
    behind = put_dead_letter(emulator, queues, b"k2", ordering_key="K")
    put_dead_letter(emulator, queues, b"free")

    result = run_tool(
        emulator, "--subscription", queues.dead_sub, "--topic", queues.relay_topic,
        "--skip-message-id", skipped,
    )  # fmt: skip

    # The skip was asked for; the message held back behind it was not.
    assert result.returncode == tool.EXIT_MESSAGES_LEFT
    summary = summary_of(result)
    assert (summary["replayed"], summary["left_on_subscription"], summary["failed"]) == (1, 2, 1)
    assert [m.message.data for m in pull(emulator, queues.relay_sub, expected=1)] == [b"free"]
    kept = available_now(emulator, queues.dead_sub)
    assert {m.message.message_id for m in kept} == {skipped, behind}


class FailingPublisher:
    """The real publisher, except that publishing `poison` fails as an outage would."""

    def __init__(self, real: Any, poison: bytes) -> None:
        self.real = real
        self.poison = poison

    def publish(self, *, topic: str, messages: list[Any], timeout: float) -> Any:
        from google.api_core import exceptions as api_exceptions

        if messages[0].data == self.poison:
            raise api_exceptions.ServiceUnavailable("injected outage")  # type: ignore[no-untyped-call]
        return self.real.publish(topic=topic, messages=messages, timeout=timeout)

    def get_topic(self, **kwargs: Any) -> Any:
        return self.real.get_topic(**kwargs)

    def list_topic_subscriptions(self, **kwargs: Any) -> Any:
        return self.real.list_topic_subscriptions(**kwargs)


def test_a_failed_publish_leaves_that_message_and_later_ones_of_its_key(
    emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    queues = make_queues(emulator, ordering=True)
    first_k = put_dead_letter(emulator, queues, b"k1", ordering_key="K")
    second_k = put_dead_letter(emulator, queues, b"k2", ordering_key="K")
    put_dead_letter(emulator, queues, b"no-key")
    put_dead_letter(emulator, queues, b"l1", {"relay_replay_count": "1"}, ordering_key="L")
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    subscriber, publisher = tool.make_clients()
    settings = tool.Settings(
        subscription=queues.dead_sub, target=queues.relay_topic, pull_timeout=1
    )
    progress = io.StringIO()
    try:
        tool.preflight(subscriber, publisher, settings)
        report = tool.DeadLetterReplay(
            subscriber, FailingPublisher(publisher, b"k1"), settings, progress=progress
        ).run()
    finally:
        subscriber.transport.close()
        publisher.transport.close()

    assert {o.message_id: o.action for o in report.outcomes if o.action == "left"} == {
        first_k: "left",
        second_k: "left",
    }
    reasons = {o.message_id: o.reason for o in report.outcomes}
    assert "publish failed: ServiceUnavailable" in reasons[first_k]
    assert f"an earlier message ({first_k}) stayed" in reasons[second_k]
    assert report.count("replayed") == 2
    arrived = {m.message.data: m.message for m in pull(emulator, queues.relay_sub, expected=2)}
    assert set(arrived) == {b"no-key", b"l1"}
    assert arrived[b"l1"].ordering_key == "L"
    assert arrived[b"l1"].attributes["relay_replay_count"] == "2"
    assert arrived[b"no-key"].attributes["relay_replay_count"] == "1"
    kept = available_now(emulator, queues.dead_sub)
    assert {m.message.message_id for m in kept} == {first_k, second_k}
    assert "LEFT on the subscription" in progress.getvalue()


def test_dry_run_lists_what_would_be_replayed_and_changes_nothing(
    emulator: PubSubEmulator,
) -> None:
    queues = make_queues(emulator)
    ids = {put_dead_letter(emulator, queues, f"d{n}".encode()) for n in range(3)}

    result = run_tool(
        emulator, "--subscription", queues.dead_sub, "--topic", queues.relay_topic, "--dry-run"
    )

    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["mode"], summary["target"]) == ("dry-run", queues.relay_topic)
    assert (summary["would_replay"], summary["replayed"]) == (3, 0)
    assert {m["message_id"] for m in summary["messages"]} == ids
    assert result.stderr.count(f"would replay to {queues.relay_topic}") == 3
    # Nacked at the end: all three are back at once; none was published.
    kept = available_now(emulator, queues.dead_sub)
    assert {m.message.message_id for m in kept} == ids
    assert remaining(emulator, queues.relay_sub) == []


def test_stops_at_max_messages_and_leaves_the_rest(emulator: PubSubEmulator) -> None:
    queues = make_queues(emulator)
    for n in range(4):
        put_dead_letter(emulator, queues, f"m{n}".encode())

    result = run_tool(
        emulator, "--subscription", queues.dead_sub, "--topic", queues.relay_topic,
        "--max-messages", "2", "--batch-size", "1",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["replayed"], summary["stopped"]) == (2, "max-messages")
    assert len(pull(emulator, queues.relay_sub, expected=2)) == 2
    # The two replayed ones are acked, the two others remain.
    assert len(remaining(emulator, queues.dead_sub)) == 2


def test_an_empty_subscription_exits_quickly(emulator: PubSubEmulator) -> None:
    queues = make_queues(emulator)

    result = run_tool(emulator, "--subscription", queues.dead_sub, "--topic", queues.relay_topic)

    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["pulled"], summary["stopped"]) == (0, "drained")
    assert summary["seconds"] < 15


# -- the drain loop's bounds, with a scripted subscriber ------------------------


class ScriptedPubSub:
    """Pulls return the scripted batches (then nothing); each pull advances the clock."""

    def __init__(self, batches: list[list[str]], seconds_per_pull: float = 1.0) -> None:
        self.batches = batches
        self.seconds_per_pull = seconds_per_pull
        self.now = 0.0
        self.pulls = 0
        self.acked: list[str] = []
        self.published: list[bytes] = []

    def clock(self) -> float:
        return self.now

    def pull(self, **_: Any) -> Any:
        self.now += self.seconds_per_pull
        batch = self.batches[self.pulls] if self.pulls < len(self.batches) else []
        self.pulls += 1
        received = [
            {"ack_id": f"ack-{data}", "message": {"message_id": data, "data": data.encode()}}
            for data in batch
        ]
        from google.pubsub_v1 import PullResponse

        return PullResponse(received_messages=received)

    def get_subscription(self, **_: Any) -> Any:
        return type("Sub", (), {"topic": "projects/p/topics/relay"})()

    def acknowledge(self, *, ack_ids: list[str], **_: Any) -> None:
        self.acked.extend(ack_ids)

    def modify_ack_deadline(self, **_: Any) -> None:
        return None

    def publish(self, *, messages: list[Any], **_: Any) -> Any:
        self.published.append(messages[0].data)
        return type("Response", (), {"message_ids": [str(len(self.published))]})()


def test_alternating_empty_and_full_pulls_still_drain_everything() -> None:
    # The old loop, range(max_messages + empty_pulls), stopped after 5 pulls here.
    pubsub = ScriptedPubSub([[], ["a"], [], ["b"], [], ["c"], [], ["d"]])
    settings = tool.Settings(
        "projects/p/subscriptions/dead", "projects/p/topics/relay", max_messages=4, force=True
    )

    report = tool.DeadLetterReplay(
        pubsub, pubsub, settings, progress=io.StringIO(), clock=pubsub.clock
    ).run()

    assert (report.count("replayed"), report.stopped) == (4, "max-messages")
    assert pubsub.acked == ["ack-a", "ack-b", "ack-c", "ack-d"]


def test_the_drain_is_bounded_by_time_when_messages_keep_coming() -> None:
    pubsub = ScriptedPubSub([[f"m{n}"] for n in range(1000)], seconds_per_pull=1.0)
    settings = tool.Settings(
        "projects/p/subscriptions/dead", "projects/p/topics/relay", max_seconds=10, force=True
    )

    report = tool.DeadLetterReplay(
        pubsub, pubsub, settings, progress=io.StringIO(), clock=pubsub.clock
    ).run()

    assert report.stopped == "max-seconds"
    assert pubsub.pulls == 10
    assert report.count("replayed") == 10
