"""tools.replay_dead_letters on the Pub/Sub emulator: nothing lost, nothing stranded.

`remaining()` and `drained()` count a message the tool pulled and never acked or
nacked (they read the subscription's acknowledgment state through a snapshot);
`available_now()` shows that a message left behind was handed straight back.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.ports import free_port
from harness.processes import child_env
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

    def publish(self, *, topic: str, messages: list[Any], **kwargs: Any) -> Any:
        from google.api_core import exceptions as api_exceptions

        if messages[0].data == self.poison:
            raise api_exceptions.ServiceUnavailable("injected outage")  # type: ignore[no-untyped-call]
        return self.real.publish(topic=topic, messages=messages, **kwargs)

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

    def __init__(
        self,
        batches: list[list[str]],
        seconds_per_pull: float = 1.0,
        keys: dict[str, str] | None = None,
    ) -> None:
        self.batches = batches
        self.seconds_per_pull = seconds_per_pull
        self.keys = keys or {}  # message id -> ordering key
        self.now = 0.0
        self.pulls = 0
        self.pull_timeouts: list[float] = []
        self.acked: list[str] = []
        self.published: list[bytes] = []

    def clock(self) -> float:
        return self.now

    def pull(self, *, timeout: float, **_: Any) -> Any:
        self.pull_timeouts.append(timeout)
        self.now += self.seconds_per_pull
        batch = self.batches[self.pulls] if self.pulls < len(self.batches) else []
        self.pulls += 1
        received = [
            {
                "ack_id": f"ack-{data}",
                "message": {
                    "message_id": data,
                    "data": data.encode(),
                    "ordering_key": self.keys.get(data, ""),
                },
            }
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


def test_no_pull_outlasts_max_seconds() -> None:
    pubsub = ScriptedPubSub([[f"m{n}"] for n in range(10)], seconds_per_pull=1.0)
    settings = tool.Settings(
        "projects/p/subscriptions/dead",
        "projects/p/topics/relay",
        max_seconds=3.5,
        pull_timeout=5.0,
        force=True,
    )

    report = tool.DeadLetterReplay(
        pubsub, pubsub, settings, progress=io.StringIO(), clock=pubsub.clock
    ).run()

    assert report.stopped == "max-seconds"
    assert pubsub.pull_timeouts == [3.5, 2.5, 1.5, 0.5]


def test_a_duplicate_delivery_of_a_replayed_message_is_acked_not_replayed_again() -> None:
    # Pub/Sub delivers at least once: the same message may come back within the run.
    pubsub = ScriptedPubSub([["a"], ["a", "b"]])
    settings = tool.Settings("projects/p/subscriptions/dead", "projects/p/topics/relay", force=True)

    report = tool.DeadLetterReplay(
        pubsub, pubsub, settings, progress=io.StringIO(), clock=pubsub.clock
    ).run()

    assert [o.message_id for o in report.outcomes] == ["a", "b"]
    assert pubsub.published == [b"a", b"b"]
    assert pubsub.acked == ["ack-a", "ack-a", "ack-b"]


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


# -- attributes a publisher set: never a crash, the tool's own values win ----------

# "²" and "\u0661" (ARABIC-INDIC DIGIT ONE) are str.isdigit(), and int("²") raises.
BAD_COUNTS = ("²", "\u0661", "-1", " 1", "1 ", "1e3", "0", "01", "+1", "9" * 1000)


def test_publisher_attributes_never_crash_the_run_and_are_kept_renamed(
    emulator: PubSubEmulator,
) -> None:
    queues = make_queues(emulator)
    sent: dict[str, dict[str, str]] = {}
    for n, bad in enumerate(BAD_COUNTS):
        sent[
            put_dead_letter(emulator, queues, f"bad-{n}".encode(), {"relay_replay_count": bad})
        ] = {"relay_replay_count": bad}
    counted = put_dead_letter(emulator, queues, b"counted", {"relay_replay_count": "3"})
    forged = put_dead_letter(
        emulator,
        queues,
        b"forged",
        {"relay_dead_letter_source_subscription": "forged", "relay_replayed_at": "then"},
    )
    conflict = put_dead_letter(
        emulator,
        queues,
        b"conflict",
        {"relay_replayed_at": "a", "relay_publisher_relay_replayed_at": "b"},
    )

    result = run_tool(emulator, "--subscription", queues.dead_sub, "--topic", queues.relay_topic)

    # A report, not a traceback; only the message that cannot be kept whole stays.
    assert "Traceback" not in result.stderr
    assert result.returncode == tool.EXIT_MESSAGES_LEFT, result.stderr
    summary = summary_of(result)
    total = len(BAD_COUNTS) + 3
    assert (summary["pulled"], summary["replayed"], summary["failed"]) == (total, total - 1, 1)
    (left,) = [m for m in summary["messages"] if m["action"] == "left"]
    assert left["message_id"] == conflict
    assert "'relay_publisher_relay_replayed_at'" in left["reason"]
    arrived = {
        m.message.data: dict(m.message.attributes)
        for m in pull(emulator, queues.relay_sub, expected=total - 1)
    }
    relay_sub_id = queues.relay_sub.rsplit("/", 1)[1]
    for n, bad in enumerate(BAD_COUNTS):
        attributes = arrived[f"bad-{n}".encode()]
        assert attributes["relay_replay_count"] == "1", bad
        assert attributes["relay_publisher_relay_replay_count"] == bad
    assert arrived[b"counted"]["relay_replay_count"] == "4"
    assert not any(k.startswith("relay_publisher_") for k in arrived[b"counted"])
    forged_copy = arrived[b"forged"]
    assert forged_copy["relay_dead_letter_source_subscription"] == relay_sub_id
    assert forged_copy["relay_publisher_relay_dead_letter_source_subscription"] == "forged"
    assert forged_copy["relay_publisher_relay_replayed_at"] == "then"
    assert forged_copy["relay_replayed_at"] != "then"
    assert [m.message.message_id for m in remaining(emulator, queues.dead_sub)] == [conflict]
    assert set(sent) | {counted, forged} == {
        m["message_id"] for m in summary["messages"] if m["action"] == "replayed"
    }


NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)
FORWARDED = {
    "CloudPubSubDeadLetterSourceSubscription": "relay-sub",
    "CloudPubSubDeadLetterSourceDeliveryCount": "5",
}


@pytest.mark.parametrize("bad", [*BAD_COUNTS, "", "9" * 5000, "\u0663", "1\n"])
def test_a_value_that_is_not_a_count_restarts_the_count_and_is_kept(bad: str) -> None:
    attributes = tool.replay_attributes({**FORWARDED, "relay_replay_count": bad}, NOW)

    assert attributes == {
        "relay_dead_letter_source_subscription": "relay-sub",
        "relay_dead_letter_source_delivery_count": "5",
        "relay_replay_count": "1",
        "relay_replayed_at": "2026-01-02T03:04:05.678901Z",
        "relay_publisher_relay_replay_count": bad,
    }


def test_a_count_of_an_earlier_replay_goes_up_and_its_values_are_replaced() -> None:
    earlier = {
        **FORWARDED,
        "relay_replay_count": "999999999",
        "relay_replayed_at": "2025-01-01T00:00:00.000000Z",
        "relay_dead_letter_source_subscription": "old-sub",
        "relay_dead_letter_source_topic_publish_time": "kept: Pub/Sub did not send it again",
        "origin": "test",
    }

    assert tool.replay_attributes(earlier, NOW) == {
        "relay_dead_letter_source_subscription": "relay-sub",
        "relay_dead_letter_source_delivery_count": "5",
        "relay_dead_letter_source_topic_publish_time": "kept: Pub/Sub did not send it again",
        "relay_replay_count": "1000000000",
        "relay_replayed_at": "2026-01-02T03:04:05.678901Z",
        "origin": "test",
    }


@pytest.mark.parametrize(
    "attributes",
    [
        {"relay_replayed_at": "a", "relay_publisher_relay_replayed_at": "b"},
        {**FORWARDED, "CloudPubSubDeadLetterSource_subscription": "other"},
    ],
)
def test_attributes_that_cannot_all_be_kept_are_a_conflict(attributes: dict[str, str]) -> None:
    with pytest.raises(tool.AttributeConflict):
        tool.replay_attributes(attributes, NOW)


def test_publish_limits_refuse_only_what_is_over_them() -> None:
    at_limit = {f"a{n:02}": "v" for n in range(98)}
    assert len(tool.replay_attributes(at_limit, NOW)) == 100
    assert tool.publish_limit_problem(b"", tool.replay_attributes(at_limit, NOW)) is None
    over = tool.replay_attributes({**at_limit, "one_more": "v"}, NOW)
    assert (
        tool.publish_limit_problem(b"", over)
        == "101 attributes with the replay's, over the 100 allowed"
    )

    assert tool.publish_limit_problem(b"", {"k": "é" * 512}) is None  # 1024 bytes
    assert tool.publish_limit_problem(b"", {"k": "é" * 512 + "x"}) == (
        "attribute 'k' is over 1024 bytes"
    )
    assert tool.publish_limit_problem(b"d" * 9_999_998, {"k": "v"}) is None
    assert tool.publish_limit_problem(b"d" * 9_999_999, {"k": "v"}) == (
        "10000001 bytes, over Pub/Sub's 10000000"
    )


def _written_names(attributes: dict[str, str]) -> set[str]:
    dead_letter = {
        "relay_dead_letter_" + tool._snake(k.removeprefix("CloudPubSubDeadLetter"))
        for k in attributes
        if k.startswith("CloudPubSubDeadLetter")
    }
    return {"relay_replay_count", "relay_replayed_at"} | dead_letter


ATTRIBUTE_NAMES = st.sampled_from(
    [
        "relay_replay_count",
        "relay_replayed_at",
        "relay_dead_letter_source_subscription",
        "relay_dead_letter_other",
        "relay_publisher_relay_replayed_at",
        "CloudPubSubDeadLetterSourceSubscription",
        "CloudPubSubDeadLetterSource_subscription",
        "CloudPubSubDeadLetterSourceDeliveryCount",
        "origin",
    ]
) | st.text(max_size=4)
ATTRIBUTE_VALUES = st.sampled_from(["1", "7", "²", "-1", " 1", "01", ""]) | st.text(max_size=6)


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(ATTRIBUTE_NAMES, ATTRIBUTE_VALUES, max_size=8))
def test_replay_attributes_lose_nothing_but_an_earlier_replay_s_values(
    attributes: dict[str, str],
) -> None:
    try:
        result = tool.replay_attributes(attributes, NOW)
    except tool.AttributeConflict:
        return
    # The same whatever order the attributes come in.
    assert tool.replay_attributes(dict(reversed(list(attributes.items()))), NOW) == result
    count = attributes.get("relay_replay_count", "")
    replayed_before = re.fullmatch(r"[1-9][0-9]{0,8}", count) is not None
    assert result["relay_replay_count"] == (str(int(count) + 1) if replayed_before else "1")
    assert result["relay_replayed_at"] == "2026-01-02T03:04:05.678901Z"
    written = _written_names(attributes)
    for key, value in attributes.items():
        if key.startswith("CloudPubSubDeadLetter"):
            kept = "relay_dead_letter_" + tool._snake(key.removeprefix("CloudPubSubDeadLetter"))
            assert key not in result
            assert result[kept] == value
        elif key not in written:
            assert result[key] == value
        elif not replayed_before:
            assert result["relay_publisher_" + key] == value
    assert set(result) - set(attributes) <= written | {"relay_publisher_" + k for k in attributes}


# -- a run always ends with its report: a failing pull, an unreachable service ------


def subscriber_at(address: str) -> Any:
    """A generated SubscriberClient for the service at `address`, plain gRPC."""
    import grpc  # type: ignore[import-untyped]  # no stubs
    from google.pubsub_v1 import SubscriberClient
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    return SubscriberClient(
        transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(address))
    )


class PullsGoAway:
    """The real subscriber, except that after its first pull every pull goes to an
    address where nothing listens: the service went away in the middle of the run."""

    def __init__(self, real: Any, gone: Any) -> None:
        self.real = real
        self.gone = gone
        self.pulls = 0

    def pull(self, **kwargs: Any) -> Any:
        self.pulls += 1
        return (self.real if self.pulls == 1 else self.gone).pull(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_pull_that_fails_ends_the_run_with_its_report_and_exit_1(
    emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    queues = make_queues(emulator)
    skipped = put_dead_letter(emulator, queues, b"stays")
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    subscriber, publisher = tool.make_clients()
    gone = subscriber_at(f"127.0.0.1:{free_port()}")
    monkeypatch.setattr(tool, "make_clients", lambda: (PullsGoAway(subscriber, gone), publisher))
    started = time.monotonic()
    try:
        code = tool.main(
            [
                "--subscription", queues.dead_sub, "--topic", queues.relay_topic,
                "--skip-message-id", skipped, "--pull-timeout", "1",
            ]
        )  # fmt: skip
    finally:
        gone.transport.close()
    seconds = time.monotonic() - started
    out, err = capsys.readouterr()

    # The skip was asked for, so the exit 1 is the pull's alone.
    assert code == tool.EXIT_MESSAGES_LEFT
    report = json.loads(out)
    assert report["stopped"] == "error"
    assert report["error"].startswith("pull failed: RetryError"), report["error"]
    assert report["failed"] == 0
    assert "stopped early: pull failed" in err
    assert seconds < 15  # the pull's own time, not the client's default 60 s retry
    # Whatever the run held is handed back at once.
    assert [m.message.message_id for m in available_now(emulator, queues.dead_sub)] == [skipped]


def test_an_unreachable_service_is_refused_in_seconds_not_after_a_traceback() -> None:
    env = {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{free_port()}", "PUBSUB_PROJECT_ID": "p"}
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable, "-m", "tools.replay_dead_letters", "--subscription", "dead",
            "--topic", "relay", "--max-seconds", "2",
        ],
        cwd=REPO, env=child_env(env), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == tool.EXIT_REFUSED, result.stderr
    assert "REFUSED: cannot read subscription projects/p/subscriptions/dead" in result.stderr
    assert "Timeout of 2.0s exceeded" in result.stderr  # --max-seconds bounds the check
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 20  # 2 s of retries, not the client's 60 s


class ExplodingPubSub(ScriptedPubSub):
    """A scripted subscription whose pull raises what no API error looks like."""

    def __init__(self, batches: list[list[str]], explode_on_pull: int) -> None:
        super().__init__(batches)
        self.explode_on_pull = explode_on_pull

    def pull(self, **kwargs: Any) -> Any:
        if self.pulls + 1 == self.explode_on_pull:
            self.pulls += 1
            raise RuntimeError("a bug in the drain")
        return super().pull(**kwargs)


def test_an_unexpected_error_ends_the_run_with_a_report_and_releases_what_it_held() -> None:
    pubsub = ExplodingPubSub([["a", "b"]], explode_on_pull=2)
    released: list[tuple[list[str], int]] = []
    pubsub.modify_ack_deadline = (  # type: ignore[method-assign]
        lambda *, ack_ids, ack_deadline_seconds, **_: released.append(
            (list(ack_ids), ack_deadline_seconds)
        )
    )
    settings = tool.Settings(
        "projects/p/subscriptions/dead",
        "projects/p/topics/relay",
        force=True,
        skip_ids=frozenset({"a"}),
    )

    report = tool.DeadLetterReplay(
        pubsub, pubsub, settings, progress=io.StringIO(), clock=pubsub.clock
    ).run()

    assert (report.stopped, report.error) == (
        "error",
        "internal error: RuntimeError: a bug in the drain",
    )
    assert report.count("replayed") == 1
    assert released[-1] == (["ack-a"], 0)


def test_a_message_the_tool_cannot_handle_stays_and_the_run_goes_on() -> None:
    # "a" and "k2" share an ordering key: "k2" stays behind "a", "b" goes on.
    pubsub = ScriptedPubSub([["a", "k2", "b"]], keys={"a": "K", "k2": "K"})
    calls = iter([ValueError("clock broke"), NOW])

    def now() -> datetime.datetime:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        assert isinstance(value, datetime.datetime)
        return value

    settings = tool.Settings("projects/p/subscriptions/dead", "projects/p/topics/relay", force=True)
    report = tool.DeadLetterReplay(
        pubsub, pubsub, settings, progress=io.StringIO(), clock=pubsub.clock, now=now
    ).run()

    outcomes = {o.message_id: (o.action, o.reason) for o in report.outcomes}
    assert outcomes["a"] == ("left", "internal error: ValueError: clock broke")
    assert outcomes["k2"][0] == "left"
    assert "an earlier message (a) stayed" in outcomes["k2"][1]
    assert outcomes["b"][0] == "replayed"
    assert report.stopped == "drained"
    assert pubsub.acked == ["ack-b"]


# -- --export to a pipe, and an export that fails -----------------------------------


def test_export_to_a_pipe_moves_each_message_once(emulator: PubSubEmulator) -> None:
    queues = make_queues(emulator)
    ids = {put_dead_letter(emulator, queues, f"p{n}".encode()) for n in range(2)}
    read_fd, write_fd = os.pipe()
    received: list[bytes] = []

    def read_all() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            received.extend(pipe.read().splitlines())

    reader = threading.Thread(target=read_all)
    reader.start()
    try:
        result = subprocess.run(
            [
                sys.executable, "-m", "tools.replay_dead_letters", "--pull-timeout", "1",
                "--subscription", queues.dead_sub, "--export", f"/dev/fd/{write_fd}",
            ],
            cwd=REPO, env=child_env(emulator.env()), pass_fds=(write_fd,),
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
    finally:
        os.close(write_fd)
        reader.join(30)

    assert result.returncode == 0, result.stderr
    assert summary_of(result)["exported"] == 2
    assert {json.loads(line)["message_id"] for line in received} == ids
    assert drained(emulator, queues.dead_sub)
    again = run_tool(emulator, "--subscription", queues.dead_sub, "--export", os.devnull)
    assert (again.returncode, summary_of(again)["pulled"]) == (0, 0), again.stderr


def test_a_failed_export_stops_exporting_and_leaves_every_message() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # nobody reads: every write fails with EPIPE
    export = os.fdopen(write_fd, "w", encoding="utf-8")
    pubsub = ScriptedPubSub([["a", "b"]])
    settings = tool.Settings("projects/p/subscriptions/dead", "", exporting=True, export=export)
    try:
        report = tool.DeadLetterReplay(
            pubsub, pubsub, settings, progress=io.StringIO(), clock=pubsub.clock
        ).run()
    finally:
        with contextlib.suppress(OSError):
            export.close()

    reasons = {o.message_id: o.reason for o in report.outcomes}
    assert report.count("exported") == 0
    assert reasons["a"].startswith("export failed: [Errno 32]")
    assert reasons["b"].startswith("not exported: the export failed earlier ([Errno 32]")
    assert pubsub.acked == []


def test_an_export_file_that_ends_in_a_cut_line_gets_a_new_line_first(tmp_path: Path) -> None:
    path = tmp_path / "poison.jsonl"
    path.write_bytes(b'{"message_id": "1"}\n{"message_id": "2", "da')

    with tool.open_export(str(path)) as export:
        export.write('{"message_id": "3"}\n')

    assert path.read_bytes().splitlines()[-1] == b'{"message_id": "3"}'
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(b'{"message_id": "1"}\n')
    with tool.open_export(str(whole)) as export:
        export.write('{"message_id": "2"}\n')
    assert whole.read_bytes() == b'{"message_id": "1"}\n{"message_id": "2"}\n'
