"""Move dead-lettered messages back to the topic they came from, losing none.

    python -m tools.replay_dead_letters --project my-project \
        --subscription workflows-callback-relay-dead-letter-sub \
        --topic workflows-callback-relay [--dry-run] [--force]
    python -m tools.replay_dead_letters ... --export poison.jsonl --message-id 123

Rules (docs/operations.md has the operator's view):
- Before anything is pulled, the target topic must exist, must have a subscription
  (Pub/Sub drops what is published to a topic nobody reads:
  https://cloud.google.com/pubsub/docs/reference/rpc/google.pubsub.v1#deadletterpolicy),
  and must not be the dead-letter subscription's own topic (that loops).
- Each message is replayed only to the topic of the subscription named by its
  ``CloudPubSubDeadLetterSourceSubscription`` attribute (added by Pub/Sub when it
  forwards a message: https://cloud.google.com/pubsub/docs/handling-failures);
  otherwise it stays, with the right topic named, unless ``--force``.
- Messages are published with the Publish RPC, attributes as a map, so any
  attribute name goes through (the handwritten client's ``publish(topic, data,
  **attrs)`` collides with attributes named topic, data, ordering_key, retry, timeout).
- A message is acked only after its publish (or export line) succeeded. A message
  that is not replayed is held (its ack deadline extended) until the run ends and
  then nacked, so it stays on the subscription and never blocks the others; the
  report says which stayed and why. A crash leaves held messages to reappear after
  at most HOLD_SECONDS.
- Every run ends with its JSON report: a failed pull stops the run with the reason
  (exit 1), and a message the tool cannot handle stays, with the reason, while the
  run goes on. Every RPC is bounded, retries included (tools.pubsub_retry).
- The tool owns relay_replay_count, relay_replayed_at and relay_dead_letter_*: its
  values always win; a publisher's value under those names is kept under
  relay_publisher_<name> (replay_attributes).
- An export line is fsynced when the file is a regular file; a pipe gets it as is.
- Ordering keys are kept; once a message of a key stays behind, later messages of
  that key stay too, so a replay never reorders a key.
- The drain stops at whichever comes first: --max-messages distinct messages,
  --empty-pulls consecutive empty pulls, or --max-seconds.

Needs only google-cloud-pubsub (requirements.txt): no test packages.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import json
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, TextIO

from tools.pubsub_names import default_project, resource_path
from tools.pubsub_publisher import publish_message
from tools.pubsub_retry import retry_within

# Attributes Pub/Sub adds to a message it forwards to a dead-letter topic.
DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"
SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
SOURCE_PROJECT = "CloudPubSubDeadLetterSourceSubscriptionProject"
# Attributes this tool adds, so a message that dead-letters again shows its history.
REPLAY_COUNT = "relay_replay_count"
REPLAYED_AT = "relay_replayed_at"
KEPT_DEAD_LETTER_PREFIX = "relay_dead_letter_"
# A publisher's own value under a name the tool writes is kept under this prefix.
PUBLISHER_PREFIX = "relay_publisher_"
# What the tool writes as a count (1 to 9 ASCII digits, no sign, space or leading
# zero): any other value, "²" or "-1" or " 1", is not a count of this tool.
_COUNT_RE = re.compile(r"[1-9][0-9]{0,8}")

# Publish limits: https://cloud.google.com/pubsub/quotas#resource_limits
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_VALUE_BYTES = 1024
MAX_MESSAGE_BYTES = 10_000_000

# How long a message that stays behind is held during the run (modifyAckDeadline
# accepts at most 600 s); renewed while the run lasts.
HOLD_SECONDS = 60
# The most any lookup, ack or modifyAckDeadline may take, retries included.
RPC_SECONDS = 10.0

EXIT_OK = 0
EXIT_MESSAGES_LEFT = 1  # some messages stayed on the subscription
EXIT_USAGE = 2  # argparse's own code
EXIT_REFUSED = 3  # refused before pulling anything


class Refused(Exception):
    """The run must not start: the target would lose or loop the messages."""


@dataclasses.dataclass
class Outcome:
    message_id: str
    action: str  # replayed, exported, would_replay, would_export, left
    reason: str = ""
    new_message_id: str = ""
    ordering_key: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v}


@dataclasses.dataclass
class ReplayReport:
    subscription: str
    target: str
    mode: str  # replay, export, dry-run
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    stopped: str = ""
    error: str = ""
    seconds: float = 0.0

    def count(self, action: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.action == action)

    @property
    def left(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action == "left"]

    @property
    def failures(self) -> list[Outcome]:
        """Messages that stayed although the operator asked for them to move."""
        return [o for o in self.left if not o.reason.startswith(SKIPPED_REASONS)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "subscription": self.subscription,
            "target": self.target,
            "mode": self.mode,
            "pulled": len(self.outcomes),
            "replayed": self.count("replayed"),
            "exported": self.count("exported"),
            "would_replay": self.count("would_replay"),
            "would_export": self.count("would_export"),
            "left_on_subscription": len(self.left),
            "failed": len(self.failures),
            "stopped": self.stopped,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "messages": [outcome.as_dict() for outcome in self.outcomes],
        }


NOT_SELECTED = "not selected by --message-id"
SKIPPED = "skipped by --skip-message-id"
SKIPPED_REASONS = (NOT_SELECTED, SKIPPED)


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


class AttributeConflict(ValueError):
    """The replay's attributes cannot be built without losing one of the message's."""


def replay_attributes(original: Mapping[str, str], now: datetime.datetime) -> dict[str, str]:
    """The attributes of the replayed message; raises AttributeConflict.

    Original attributes are kept as they are. Pub/Sub's CloudPubSubDeadLetter*
    attributes are kept under relay_dead_letter_* instead: the replay is a new
    publish, not a dead letter, so it must not look like one to a consumer that
    checks for them, and if it dead-letters again Pub/Sub's fresh values cannot be
    confused with the previous ones. relay_replay_count counts the replays.

    The tool's own values win, whatever order the attributes come in. A message
    whose relay_replay_count is a count this tool writes was replayed before: its
    relay_* values are that replay's, and are replaced. Otherwise a value under a
    name the tool writes (a bad count such as "²", or a relay_dead_letter_* or
    relay_replayed_at) is the publisher's: it is kept under relay_publisher_<name>,
    and the count starts at 1. When that name is taken too, or two Pub/Sub names
    map to one, AttributeConflict says so, and the message stays.
    """
    own: dict[str, str] = {}
    for key in sorted(original):
        if key.startswith(DEAD_LETTER_PREFIX):
            kept = KEPT_DEAD_LETTER_PREFIX + _snake(key.removeprefix(DEAD_LETTER_PREFIX))
            if kept in own:
                raise AttributeConflict(f"{key!r} and another attribute both map to {kept!r}")
            own[kept] = original[key]
    previous = original.get(REPLAY_COUNT, "")
    count = int(previous) if _COUNT_RE.fullmatch(previous) else 0
    replayed_before = count > 0
    own[REPLAY_COUNT] = str(count + 1)
    own[REPLAYED_AT] = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    attributes: dict[str, str] = {}
    for key, value in original.items():
        if key.startswith(DEAD_LETTER_PREFIX) or (key in own and replayed_before):
            continue
        if key in own:
            renamed = PUBLISHER_PREFIX + key
            if renamed in original:
                raise AttributeConflict(
                    f"the message sets {key!r}, which the replay writes, and {renamed!r}, "
                    "where the replay would keep it"
                )
            attributes[renamed] = value
        else:
            attributes[key] = value
    attributes.update(own)
    return attributes


def publish_limit_problem(data: bytes, attributes: Mapping[str, str]) -> str | None:
    """Why Pub/Sub would refuse this message, or None (checked here because the
    emulator does not enforce these limits, and a refusal must look the same)."""
    if len(attributes) > MAX_ATTRIBUTES:
        return f"{len(attributes)} attributes with the replay's, over the {MAX_ATTRIBUTES} allowed"
    for key, value in attributes.items():
        if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
            return f"attribute {key!r} is over {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
    size = len(data) + sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    if size > MAX_MESSAGE_BYTES:
        return f"{size} bytes, over Pub/Sub's {MAX_MESSAGE_BYTES}"
    return None


@dataclasses.dataclass
class Settings:
    subscription: str
    target: str  # topic path; empty when exporting
    max_messages: int = 1000
    batch_size: int = 10
    empty_pulls: int = 2
    max_seconds: float = 300.0
    pull_timeout: float = 5.0
    publish_timeout: float = 30.0
    dry_run: bool = False
    force: bool = False
    exporting: bool = False
    export: IO[str] | None = None  # open export file; None in a dry run
    only_ids: frozenset[str] = frozenset()
    skip_ids: frozenset[str] = frozenset()

    @property
    def mode(self) -> str:
        if self.dry_run:
            return "dry-run"
        return "export" if self.exporting else "replay"


def preflight(
    subscriber: Any, publisher: Any, settings: Settings, seconds: float = RPC_SECONDS
) -> None:
    """Refuse a target that would lose or loop messages; raises Refused. Each call
    takes at most `seconds`; an unreachable service is a refusal, not a hang."""
    from google.api_core import exceptions as api_exceptions

    bounded = {"retry": retry_within(seconds), "timeout": seconds}
    try:
        dead_letter = subscriber.get_subscription(subscription=settings.subscription, **bounded)
    except api_exceptions.NotFound as exc:
        raise Refused(f"subscription {settings.subscription} does not exist") from exc
    except api_exceptions.GoogleAPIError as exc:  # RetryError is not a GoogleAPICallError
        raise Refused(f"cannot read subscription {settings.subscription}: {exc}") from exc
    if settings.exporting:
        return
    if settings.target == dead_letter.topic:
        raise Refused(
            f"{settings.target} is the topic {settings.subscription} reads: replaying into it "
            "would loop; name the topic of the subscription the messages came from"
        )
    try:
        publisher.get_topic(topic=settings.target, **bounded)
        readers = list(publisher.list_topic_subscriptions(topic=settings.target, **bounded))
    except api_exceptions.NotFound as exc:
        raise Refused(f"topic {settings.target} does not exist") from exc
    except api_exceptions.GoogleAPIError as exc:
        raise Refused(f"cannot check topic {settings.target}: {exc}") from exc
    if not readers:
        raise Refused(
            f"no subscription reads {settings.target}: Pub/Sub would drop every replayed "
            "message; create the trigger (or fix --topic) first"
        )


class DeadLetterReplay:
    """One run over a dead-letter subscription. Every loop is bounded."""

    def __init__(
        self,
        subscriber: Any,
        publisher: Any,
        settings: Settings,
        *,
        progress: TextIO = sys.stderr,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.subscriber = subscriber
        self.publisher = publisher
        self.settings = settings
        self.progress = progress
        self.clock = clock
        self.now = now
        self.report = ReplayReport(settings.subscription, settings.target, settings.mode)
        self._done: dict[str, str] = {}  # message id -> action, for redeliveries
        self._held: dict[str, str] = {}  # message id -> ack id
        self._held_until = 0.0
        self._blocked_keys: dict[str, str] = {}  # ordering key -> message id that stayed
        self._source_topics: dict[str, str] = {}  # source subscription -> its topic
        self._export_failed = ""  # why the export file failed, once it has

    def run(self) -> ReplayReport:
        """Drain, then release what stayed. Always returns the report: an unexpected
        error stops the run with its reason in `error`, never a bare traceback."""
        started = self.clock()
        try:
            self.report.stopped = self._drain(started + self.settings.max_seconds)
        except Exception as exc:  # noqa: BLE001 - reported, and the held messages released
            self.report.stopped = "error"
            self.report.error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            self._release_held()
            self.report.seconds = self.clock() - started
        return self.report

    def _drain(self, deadline: float) -> str:
        from google.api_core import exceptions as api_exceptions

        empty_in_a_row = 0
        while True:
            remaining = self.settings.max_messages - len(self.report.outcomes)
            if remaining <= 0:
                return "max-messages"
            if empty_in_a_row >= self.settings.empty_pulls:
                return "drained"
            left = deadline - self.clock()
            if left <= 0:
                return "max-seconds"
            self._renew_held()
            seconds = max(0.5, min(self.settings.pull_timeout, left))
            try:
                response = self.subscriber.pull(
                    subscription=self.settings.subscription,
                    max_messages=min(self.settings.batch_size, remaining),
                    retry=retry_within(seconds),
                    timeout=seconds,
                )
                received = list(response.received_messages)
            except api_exceptions.DeadlineExceeded:
                received = []  # nothing arrived within the pull's time
            except api_exceptions.GoogleAPIError as exc:  # RetryError included
                self.report.error = f"pull failed: {type(exc).__name__}: {exc}"
                return "error"
            fresh = [item for item in received if not self._redelivered(item)]
            if not fresh:
                empty_in_a_row += 1
                continue
            empty_in_a_row = 0
            # pull never returns more than asked, but never drop one silently.
            self._hold([(i.message.message_id, i.ack_id) for i in fresh[remaining:]])
            for item in fresh[:remaining]:
                outcome = self._handle_safely(item)
                self.report.outcomes.append(outcome)
                self._done[outcome.message_id] = outcome.action
                if outcome.action not in ("replayed", "exported"):
                    # Held at once, before its lease from the pull can run out.
                    self._hold([(outcome.message_id, item.ack_id)])
                self._print(outcome)

    def _redelivered(self, item: Any) -> bool:
        """Pub/Sub delivers at least once: a message seen in this run is not new."""
        message_id = item.message.message_id
        action = self._done.get(message_id)
        if action is None:
            return False
        if action in ("replayed", "exported"):
            self._ack([item.ack_id])  # already moved; ack the duplicate delivery
        else:
            self._hold([(message_id, item.ack_id)])
        return True

    def _handle_safely(self, item: Any) -> Outcome:
        """_handle, except that an unexpected error leaves this one message behind,
        with the error as its reason, and the run goes on with the others."""
        try:
            return self._handle(item)
        except Exception as exc:  # noqa: BLE001 - one message's problem must not end the run
            message = item.message
            reason = f"internal error: {type(exc).__name__}: {exc}"
            if message.ordering_key:
                self._blocked_keys[message.ordering_key] = message.message_id
            return Outcome(message.message_id, "left", reason, ordering_key=message.ordering_key)

    def _handle(self, item: Any) -> Outcome:
        message = item.message
        outcome = Outcome(message.message_id, "left", ordering_key=message.ordering_key)
        if self.settings.only_ids and message.message_id not in self.settings.only_ids:
            outcome.reason = NOT_SELECTED
            return outcome
        key = message.ordering_key
        if message.message_id in self.settings.skip_ids:
            outcome.reason = SKIPPED
            if key:
                self._blocked_keys[key] = message.message_id
            return outcome
        if key and key in self._blocked_keys:
            outcome.reason = (
                f"ordering key {key!r}: an earlier message ({self._blocked_keys[key]}) stayed, "
                "so this one stays too to keep the order"
            )
            return outcome
        if self.settings.exporting:
            self._export(item, outcome)
        else:
            self._replay(item, outcome)
        if outcome.action == "left" and key:
            self._blocked_keys[key] = message.message_id
        return outcome

    def _export(self, item: Any, outcome: Outcome) -> None:
        if self.settings.dry_run:
            outcome.action = "would_export"
            return
        message = item.message
        line = {
            "message_id": message.message_id,
            "publish_time": _timestamp(message.publish_time),
            "ordering_key": message.ordering_key,
            "attributes": dict(message.attributes),
            "data_b64": base64.b64encode(message.data).decode("ascii"),
            "subscription": self.settings.subscription,
            "exported_at": self.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        export = self.settings.export
        assert export is not None
        if self._export_failed:
            outcome.reason = f"not exported: the export failed earlier ({self._export_failed})"
            return
        try:
            export.write(json.dumps(line, sort_keys=True) + "\n")
            export.flush()
            sync_if_file(export.fileno())
        except OSError as exc:
            # A part of the line may be written: append nothing more in this run, so
            # that no later line is glued to it.
            self._export_failed = str(exc)
            outcome.reason = f"export failed: {exc}"
            return
        # Acked only once the line is on disk (or, for a pipe, handed to its reader).
        outcome.action = "exported"
        if not self._ack([item.ack_id]):
            outcome.reason = "exported, but the ack failed: it may be exported again"

    def _replay(self, item: Any, outcome: Outcome) -> None:
        message = item.message
        attributes = dict(message.attributes)
        source_problem = self._source_problem(attributes)
        if source_problem and not self.settings.force:
            outcome.reason = source_problem + "; or pass --force"
            return
        try:
            new_attributes = replay_attributes(attributes, self.now())
        except AttributeConflict as exc:
            outcome.reason = f"attributes: {exc}; export it with --export"
            return
        problem = publish_limit_problem(message.data, new_attributes)
        if problem:
            outcome.reason = f"cannot be republished: {problem}; export it with --export"
            return
        if self.settings.dry_run:
            outcome.action = "would_replay"
            outcome.reason = source_problem
            return
        try:
            new_id = publish_message(
                self.publisher,
                self.settings.target,
                message.data,
                new_attributes,
                ordering_key=message.ordering_key,
                timeout=self.settings.publish_timeout,
            )
        except Exception as exc:  # noqa: BLE001 - any failure leaves this one message behind
            outcome.reason = f"publish failed: {type(exc).__name__}: {exc}"
            return
        outcome.action = "replayed"
        outcome.new_message_id = str(new_id)
        if not self._ack([item.ack_id]):
            outcome.reason = "replayed, but the ack failed: it may be replayed again"

    def _source_problem(self, attributes: Mapping[str, str]) -> str:
        """Why this message may not belong on the target topic, or ''."""
        from google.api_core import exceptions as api_exceptions

        source = attributes.get(SOURCE_SUBSCRIPTION)
        if not source:
            return (
                f"no {SOURCE_SUBSCRIPTION} attribute, so its source topic is unknown "
                "(it was not forwarded by a dead-letter policy)"
            )
        if not source.startswith("projects/"):
            # Seen as a short id (emulator); the project comes in its own attribute.
            project = attributes.get(SOURCE_PROJECT) or self.settings.subscription.split("/")[1]
            source = f"projects/{project}/subscriptions/{source}"
        topic = self._source_topics.get(source)
        if topic is None:
            try:
                topic = str(
                    self.subscriber.get_subscription(
                        subscription=source,
                        retry=retry_within(RPC_SECONDS),
                        timeout=RPC_SECONDS,
                    ).topic
                )
            except api_exceptions.NotFound:
                topic = ""
            except api_exceptions.GoogleAPIError as exc:
                return f"could not look up its source subscription {source}: {exc}"
            self._source_topics[source] = topic
        if not topic:
            return f"its source subscription {source} no longer exists"
        if topic != self.settings.target:
            return f"it came from {source}, which reads {topic}: replay it with --topic {topic}"
        return ""

    def _ack(self, ack_ids: list[str]) -> bool:
        try:
            self.subscriber.acknowledge(
                subscription=self.settings.subscription,
                ack_ids=ack_ids,
                retry=retry_within(RPC_SECONDS),
                timeout=RPC_SECONDS,
            )
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            print(f"ack failed: {type(exc).__name__}: {exc}", file=self.progress)
            return False
        return True

    def _modify(self, ack_ids: Iterable[str], seconds: int) -> None:
        ids = list(ack_ids)
        for start in range(0, len(ids), 1000):  # keep each request small
            try:
                self.subscriber.modify_ack_deadline(
                    subscription=self.settings.subscription,
                    ack_ids=ids[start : start + 1000],
                    ack_deadline_seconds=seconds,
                    retry=retry_within(RPC_SECONDS),
                    timeout=RPC_SECONDS,
                )
            except Exception as exc:  # noqa: BLE001 - unheld messages come back by themselves
                print(
                    f"modifyAckDeadline({seconds}) failed: {type(exc).__name__}: {exc}; "
                    "those messages come back after their ack deadline",
                    file=self.progress,
                )

    def _hold(self, items: list[tuple[str, str]]) -> None:
        if not items:
            return
        self._modify((ack_id for _, ack_id in items), HOLD_SECONDS)
        self._held.update(items)
        if len(self._held) == len(items):
            self._held_until = self.clock() + HOLD_SECONDS

    def _renew_held(self) -> None:
        if self._held and self.clock() > self._held_until - HOLD_SECONDS / 2:
            self._modify(self._held.values(), HOLD_SECONDS)
            self._held_until = self.clock() + HOLD_SECONDS

    def _release_held(self) -> None:
        """Nack every held message: it is at once available again on the subscription."""
        if self._held:
            self._modify(self._held.values(), 0)
            self._held.clear()

    def _print(self, outcome: Outcome) -> None:
        label = {
            "replayed": f"replayed -> {outcome.new_message_id}",
            "exported": "exported",
            "would_replay": f"would replay to {self.settings.target}",
            "would_export": "would export",
            "left": "LEFT on the subscription",
        }[outcome.action]
        reason = f": {outcome.reason}" if outcome.reason else ""
        print(f"{outcome.message_id} {label}{reason}", file=self.progress)


def sync_if_file(fd: int) -> None:
    """fsync a regular file. A pipe, socket or terminal cannot be synced (fsync
    fails with EINVAL), and what was written to it is already with its reader:
    https://man7.org/linux/man-pages/man2/fsync.2.html"""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.fsync(fd)


def open_export(path: str) -> IO[str]:
    """Open the export file for appending. If a regular file ends in a part of a
    line (a run that died while writing), start on a new line, so that the first
    new line stays whole."""
    export = open(path, "a", encoding="utf-8")  # noqa: SIM115 - the caller closes it
    try:
        if stat.S_ISREG(os.fstat(export.fileno()).st_mode) and export.tell() > 0:
            with open(path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    export.write("\n")
    except OSError:
        export.close()
        raise
    return export


def _timestamp(value: Any) -> str:
    """publish_time as RFC 3339 (proto-plus gives a datetime)."""
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.replay_dead_letters",
        description=(
            "Re-publish dead-lettered messages to the topic they came from, then ack them. "
            f"Exit codes: {EXIT_OK} all done, {EXIT_MESSAGES_LEFT} some stayed on the "
            f"subscription, {EXIT_USAGE} usage, {EXIT_REFUSED} refused before pulling."
        ),
    )
    parser.add_argument("--subscription", required=True, help="dead-letter subscription")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--topic", help="topic to re-publish to (the source of the messages)")
    target.add_argument(
        "--export",
        metavar="FILE",
        help="append messages to FILE as JSON lines (data_b64, attributes, ...), then ack them",
    )
    parser.add_argument("--project", help="project of short ids (default: environment)")
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would happen; change nothing"
    )
    parser.add_argument(
        "--force", action="store_true", help="replay even to a topic that is not the source's"
    )
    parser.add_argument(
        "--message-id", action="append", default=[], metavar="ID", help="act only on these"
    )
    parser.add_argument(
        "--skip-message-id", action="append", default=[], metavar="ID", help="leave these"
    )
    parser.add_argument("--max-messages", type=int, default=1000, help="stop after this many")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop after this long")
    parser.add_argument("--batch-size", type=int, default=10, help="messages per pull")
    parser.add_argument(
        "--empty-pulls", type=int, default=2, help="consecutive empty pulls that mean drained"
    )
    parser.add_argument("--pull-timeout", type=float, default=5.0, help="seconds per pull")
    return parser


def make_clients() -> tuple[Any, Any]:
    """The generated (GAPIC) clients; they honour PUBSUB_EMULATOR_HOST themselves."""
    from google.pubsub_v1 import PublisherClient, SubscriberClient

    return SubscriberClient(), PublisherClient()


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if min(args.max_messages, args.batch_size, args.empty_pulls) < 1 or args.max_seconds <= 0:
        parser.error("--max-messages, --batch-size, --empty-pulls, --max-seconds must be > 0")
    project = default_project(args.project)
    try:
        subscription = resource_path("subscriptions", args.subscription, project)
        topic = resource_path("topics", args.topic, project) if args.topic else ""
    except ValueError as exc:
        parser.error(str(exc))

    export: IO[str] | None = None
    if args.export and not args.dry_run:
        try:
            export = open_export(args.export)
        except OSError as exc:
            parser.error(f"--export: {exc}")
    settings = Settings(
        subscription=subscription,
        target=topic,
        max_messages=args.max_messages,
        batch_size=args.batch_size,
        empty_pulls=args.empty_pulls,
        max_seconds=args.max_seconds,
        pull_timeout=args.pull_timeout,
        dry_run=args.dry_run,
        force=args.force,
        exporting=bool(args.export),
        export=export,
        only_ids=frozenset(args.message_id),
        skip_ids=frozenset(args.skip_message_id),
    )
    subscriber, publisher = make_clients()
    try:
        try:
            preflight(subscriber, publisher, settings, min(RPC_SECONDS, args.max_seconds))
        except Refused as exc:
            print(f"REFUSED: {exc}. Nothing was pulled.", file=sys.stderr)
            return EXIT_REFUSED
        where = topic or args.export
        print(
            f"{settings.mode}: {subscription} -> {where} (at most {args.max_messages} messages, "
            f"{args.max_seconds:g} s)",
            file=sys.stderr,
        )
        report = DeadLetterReplay(subscriber, publisher, settings).run()
    finally:
        if export is not None:
            try:
                export.close()
            except OSError as exc:  # a pipe whose reader is gone: the report says which failed
                print(f"closing --export failed: {exc}", file=sys.stderr)
        subscriber.transport.close()
        publisher.transport.close()
    print(json.dumps(report.as_dict()))
    if report.error:
        print(f"stopped early: {report.error}", file=sys.stderr)
    failures = report.failures
    if failures:
        print(
            f"{len(failures)} message(s) stayed on {subscription}: "
            + ", ".join(o.message_id for o in failures),
            file=sys.stderr,
        )
    return EXIT_MESSAGES_LEFT if report.error or failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
