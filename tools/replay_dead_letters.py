"""Move messages from a dead-letter subscription back to the relay topic.

    python -m tools.replay_dead_letters --project my-project \
        --subscription workflows-callback-relay-dead-letter \
        --topic workflows-callback-relay --max-messages 100

Each message is re-published with the same data and attributes, and acknowledged
on the dead-letter subscription only after the publish succeeded, so a crash
or a failed publish loses nothing (at worst a message is replayed twice, which
callbacks tolerate: a second call on a finished execution answers 404).
Stops when the subscription looks drained (consecutive empty pulls), after
--max-messages, or at the first failed publish (exit code 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

PROJECT_ENV_VARS = ("PUBSUB_PROJECT_ID", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")


@dataclasses.dataclass
class ReplayCounts:
    pulled: int = 0
    replayed: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def resource_path(kind: str, name: str, project: str | None) -> str:
    """projects/P/<kind>/<name> from a short id, or the full name unchanged."""
    if name.startswith("projects/"):
        parts = name.split("/")
        if len(parts) != 4 or parts[2] != kind or not parts[1] or not parts[3]:
            raise ValueError(f"{name!r} is not projects/PROJECT/{kind}/NAME")
        return name
    if not name or "/" in name:
        raise ValueError(f"{name!r} is not a {kind[:-1]} id")
    if not project:
        raise ValueError(f"{name!r} needs a project: pass --project or set {PROJECT_ENV_VARS[0]}")
    return f"projects/{project}/{kind}/{name}"


def replay(
    subscriber: Any,
    publisher: Any,
    subscription: str,
    topic: str,
    *,
    max_messages: int,
    batch_size: int = 10,
    empty_pulls_to_stop: int = 2,
    pull_timeout: float = 5.0,
    publish_timeout: float = 30.0,
    progress: TextIO = sys.stderr,
) -> ReplayCounts:
    """Replay up to `max_messages`; every loop is bounded by counts and timeouts."""
    from google.api_core import exceptions as api_exceptions

    counts = ReplayCounts()
    empty_pulls = 0
    # Each iteration pulls >= 1 message or counts an empty pull, so this bound holds.
    for _ in range(max_messages + empty_pulls_to_stop):
        remaining = max_messages - counts.pulled
        if remaining <= 0 or empty_pulls >= empty_pulls_to_stop:
            break
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": min(batch_size, remaining)},
                timeout=pull_timeout,
            )
            received = list(response.received_messages)
        except api_exceptions.DeadlineExceeded:
            received = []
        if not received:
            empty_pulls += 1
            continue
        empty_pulls = 0
        for index, item in enumerate(received):
            counts.pulled += 1
            message = item.message
            try:
                future = publisher.publish(topic, message.data, **dict(message.attributes))
                new_id = future.result(timeout=publish_timeout)
            except Exception as exc:  # noqa: BLE001 - any publish failure stops the replay
                counts.failed += 1
                # Hand this and the rest of the batch back at once, un-acked.
                ack_ids = [later.ack_id for later in received[index:]]
                subscriber.modify_ack_deadline(
                    request={
                        "subscription": subscription,
                        "ack_ids": ack_ids,
                        "ack_deadline_seconds": 0,
                    }
                )
                print(
                    f"FAILED to re-publish message {message.message_id}: "
                    f"{type(exc).__name__}: {exc}; it stays on {subscription}",
                    file=progress,
                )
                return counts
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [item.ack_id]})
            counts.replayed += 1
            print(
                f"replayed {counts.replayed}/{max_messages}: "
                f"{message.message_id} -> {new_id} ({len(message.data)} bytes)",
                file=progress,
            )
    return counts


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.replay_dead_letters",
        description="Re-publish dead-lettered messages to the relay topic, then ack them.",
    )
    parser.add_argument("--subscription", required=True, help="dead-letter subscription")
    parser.add_argument("--topic", required=True, help="relay topic to re-publish to")
    parser.add_argument("--project", help="project of short ids (default: environment)")
    parser.add_argument("--max-messages", type=int, default=1000, help="stop after this many")
    parser.add_argument("--batch-size", type=int, default=10, help="messages per pull")
    parser.add_argument(
        "--empty-pulls", type=int, default=2, help="consecutive empty pulls that mean drained"
    )
    parser.add_argument("--pull-timeout", type=float, default=5.0, help="seconds per pull")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.max_messages < 1 or args.batch_size < 1 or args.empty_pulls < 1:
        parser.error("--max-messages, --batch-size and --empty-pulls must be at least 1")
    project = args.project or next(
        (os.environ[name] for name in PROJECT_ENV_VARS if os.environ.get(name)), None
    )
    try:
        subscription = resource_path("subscriptions", args.subscription, project)
        topic = resource_path("topics", args.topic, project)
    except ValueError as exc:
        parser.error(str(exc))

    from google.cloud import pubsub_v1

    started = time.monotonic()
    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    print(f"replaying {subscription} -> {topic} (at most {args.max_messages})", file=sys.stderr)
    try:
        counts = replay(
            subscriber,
            publisher,
            subscription,
            topic,
            max_messages=args.max_messages,
            batch_size=args.batch_size,
            empty_pulls_to_stop=args.empty_pulls,
            pull_timeout=args.pull_timeout,
        )
    finally:
        publisher.stop()
        subscriber.close()
    summary = counts.as_dict() | {"seconds": round(time.monotonic() - started, 3)}
    print(json.dumps(summary))
    return 1 if counts.failed else 0


if __name__ == "__main__":
    sys.exit(main())
