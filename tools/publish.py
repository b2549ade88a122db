"""Publish one callback message to the relay topic.

    python -m tools.publish --topic workflows-callback-relay --project my-project \
        --url https://workflowexecutions.googleapis.com/v1/projects/.../callbacks/... \
        --payload '{"status": "done"}' --expires-in 3600

The message is UTF-8 JSON per schemas/callback-message.schema.json. Against the
emulator, set PUBSUB_EMULATOR_HOST (and PUBSUB_PROJECT_ID or --project); against
a real project, Application Default Credentials are used. Prints the message id.
Dev/ops tooling: the relay function never imports google-cloud-pubsub.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from harness.workflow_message import workflows_json_encode

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
PROJECT_ENV_VARS = ("PUBSUB_PROJECT_ID", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")


def topic_path(topic: str, project: str | None) -> str:
    """Accept a topic id or a full projects/P/topics/T name."""
    if topic.startswith("projects/"):
        parts = topic.split("/")
        if len(parts) != 4 or parts[2] != "topics" or not parts[1] or not parts[3]:
            raise ValueError(f"{topic!r} is not projects/PROJECT/topics/TOPIC")
        return topic
    if "/" in topic or not topic:
        raise ValueError(f"{topic!r} is not a topic id")
    if not project:
        raise ValueError(
            f"topic {topic!r} needs a project: pass --project or set one of"
            f" {', '.join(PROJECT_ENV_VARS)}"
        )
    return f"projects/{project}/topics/{topic}"


def build_message(
    url: str,
    payload: Any,
    method: str = "POST",
    expires_in: float | None = None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"callback_url": url, "payload": payload, "method": method}
    if expires_in is not None:
        moment = (now or datetime.datetime.now(datetime.UTC)) + datetime.timedelta(
            seconds=expires_in
        )
        message["expires_at"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return message


def parse_attributes(pairs: Sequence[str]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"attribute {pair!r} is not KEY=VALUE")
        attributes[key] = value
    return attributes


def publish(topic: str, data: bytes, attributes: dict[str, str], timeout: float = 30.0) -> str:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    try:
        future = publisher.publish(topic, data, **attributes)
        return str(future.result(timeout=timeout))
    finally:
        publisher.stop()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.publish",
        description="Publish a callback message (URL, payload, expiry) to a Pub/Sub topic.",
    )
    parser.add_argument("--topic", required=True, help="topic id or projects/P/topics/T")
    parser.add_argument("--project", help="project of a short topic id (default: environment)")
    parser.add_argument("--url", required=True, help="the workflow's callback URL")
    parser.add_argument("--payload", default="{}", help="JSON value sent as the callback body")
    parser.add_argument("--method", default="POST", choices=METHODS, help="callback method")
    parser.add_argument(
        "--expires-in", type=float, metavar="SECONDS", help="set expires_at this far ahead"
    )
    parser.add_argument(
        "--attribute", action="append", default=[], metavar="KEY=VALUE", help="message attribute"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the message and do not publish"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        parser.error(f"--payload is not JSON: {exc}")
    if args.expires_in is not None and args.expires_in <= 0:
        parser.error("--expires-in must be positive")
    project = args.project or next(
        (os.environ[name] for name in PROJECT_ENV_VARS if os.environ.get(name)), None
    )
    try:
        topic = topic_path(args.topic, project)
        attributes = parse_attributes(args.attribute)
    except ValueError as exc:
        parser.error(str(exc))
    message = build_message(args.url, payload, args.method, args.expires_in)
    data = workflows_json_encode(message)
    if args.dry_run:
        print(data.decode("utf-8"))
        return 0
    try:
        message_id = publish(topic, data, attributes)
    except Exception as exc:  # noqa: BLE001 - a CLI reports any client error in one line
        print(f"publish to {topic} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"topic": topic, "message_id": message_id, "message": message}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
