"""Publish one callback message to the relay topic, after checking it as the relay would.

    python -m tools.publish --topic workflows-callback-relay --project my-project \
        --url https://workflowexecutions.googleapis.com/v1/projects/.../callbacks/... \
        --payload '{"status": "done"}' --expires-in 3600

    # Check a message a worker built, without publishing it:
    echo "$MESSAGE" | python -m tools.publish --message-file - --dry-run

The message is UTF-8 JSON per schemas/callback-message.schema.json. Before
anything is published (and with --dry-run, instead of publishing) it goes
through the relay's own parser and callback URL policy (function/callback_relay),
configured from this environment exactly as the deployed relay is:
ALLOWED_WORKFLOWS, WORKFLOWS_EMULATOR_HOST and MAX_MESSAGE_BYTES. A message the
relay would refuse is never published. Each refusal also says what the waiting
step then sees, as the relay decides it: "the waiting step gets CallbackError
INVALID_MESSAGE" (fail fast) or "the waiting step waits until its timeout:
nothing to fail fast to".

Exit codes: 0 published (or, with --dry-run, accepted); 1 not published: the
service refused it (missing topic, permission, ...) or there were no credentials;
2 bad arguments or relay environment; 3 the relay would refuse the message, so it
was not published; 4 the publish timed out or the service failed, so the message
may or may not have been published (publishing again is safe: the relay calls a
callback at most once with success, docs/producers.md).

Against the emulator, set PUBSUB_EMULATOR_HOST (and PUBSUB_PROJECT_ID or
--project); against a real project, Application Default Credentials are used.
Dev/ops tooling: the relay function never imports google-cloud-pubsub.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# tools/__init__.py puts function/ on the import path: these are the relay's own rules.
from callback_relay.callback_response import Classification, DeliveryResult, Kind
from callback_relay.callback_url_policy import CallbackTarget, CallbackUrlPolicy
from callback_relay.config import load_settings
from callback_relay.errors import ConfigError, Rejection
from callback_relay.message import CALLBACK_METHODS, CallbackMessage, parse_message_data
from callback_relay.outcomes import Outcome
from callback_relay.pubsub_event import PubSubDelivery
from callback_relay.relay import CallbackRelay
from callback_relay.structured_log import StructuredLog
from callback_relay.trace_context import TraceContext
from tools.pubsub_names import default_project, resource_path
from tools.pubsub_publisher import publish_message

EXIT_PUBLISHED = 0
EXIT_PUBLISH_FAILED = 1  # nothing was published
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_MAYBE_PUBLISHED = 4  # the outcome of the publish is unknown


def build_message(
    url: str,
    payload: Any,
    method: str = "POST",
    expires_in: float | None = None,
    now: datetime.datetime | None = None,
    metadata: Any = None,
) -> dict[str, Any]:
    """The message in the schema's field order; metadata only when given."""
    message: dict[str, Any] = {"callback_url": url, "payload": payload, "method": method}
    if expires_in is not None:
        moment = (now or datetime.datetime.now(datetime.UTC)) + datetime.timedelta(
            seconds=expires_in
        )
        message["expires_at"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if metadata is not None:
        message["metadata"] = metadata
    return message


def encode_message(message: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the same encoding workflow.yaml's json.encode produces."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_attributes(pairs: Sequence[str]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"attribute {pair!r} is not KEY=VALUE")
        attributes[key] = value
    return attributes


class RelayWouldRefuse(Exception):
    """The relay would acknowledge this message without calling the callback."""

    def __init__(self, outcome: str, reason: str, detail: str) -> None:
        super().__init__(f"{outcome} ({reason}): {detail}")
        self.outcome = outcome
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class AcceptedMessage:
    message: CallbackMessage
    target: CallbackTarget


def check_with_relay_rules(
    data: bytes,
    env: Mapping[str, str],
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> AcceptedMessage:
    """Apply the relay's checks in the relay's order; raise RelayWouldRefuse or ConfigError.

    Mirrors CallbackRelay.relay_delivery/relay_message: parse, URL policy, expiry.
    """
    settings = load_settings(env)
    try:
        message = parse_message_data(data, settings.max_message_bytes)
    except Rejection as exc:
        raise RelayWouldRefuse("message_rejected", exc.reason, exc.detail) from None
    policy = CallbackUrlPolicy(settings.emulator_origin, settings.allowed_workflows)
    try:
        target = policy.check(message.callback_url)
    except Rejection as exc:
        raise RelayWouldRefuse("url_refused", exc.reason, exc.detail) from None
    if message.expires_at is not None and now() >= message.expires_at:
        raise RelayWouldRefuse(
            "expired", "expired", f"expires_at {message.expires_at.isoformat()} has passed"
        )
    return AcceptedMessage(message, target)


FAILS_FAST = "the waiting step gets CallbackError INVALID_MESSAGE"
WAITS = "the waiting step waits until its timeout: nothing to fail fast to"


class _NoCallClient:
    """The relay's callback client for a dry run: records the call, answers 200, sends nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def deliver(
        self,
        method: str,
        url: str,
        body: bytes | None,
        key: str,
        expires_in_seconds: float | None = None,
    ) -> DeliveryResult:
        self.calls.append((method, url))
        return DeliveryResult(Classification(Kind.DELIVERED, "dry run", 200), 1, 0.0)


class _SilentLog(StructuredLog):
    def enabled(self, level: int) -> bool:
        return False


def waiting_step(
    data: bytes,
    env: Mapping[str, str],
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> str:
    """What the waiting step sees of a message the relay refuses: FAILS_FAST or WAITS.

    Decided by the relay itself (CallbackRelay, with this environment's settings and
    URL policy), run with a client that calls nothing: no second copy of its rules.
    """
    settings = load_settings(env)
    policy = CallbackUrlPolicy(settings.emulator_origin, settings.allowed_workflows)
    relay = CallbackRelay(settings, policy, _NoCallClient(), _SilentLog(), now)
    outcome = relay.relay_delivery(PubSubDelivery("dry-run", data, {}), TraceContext())
    return FAILS_FAST if outcome.outcome == Outcome.FAILED_FAST else WAITS


def may_have_been_published(error: Exception) -> bool:
    """Whether a publish that raised `error` may still have been applied.

    A refusal by the service (a client error: no topic, no permission, invalid) or
    missing credentials means nothing was sent or applied. A timeout, a server error
    or a lost connection does not say: for UNAVAILABLE "there is NOT A GUARANTEE
    that the server has not seen anything"
    (https://github.com/grpc/grpc/blob/master/include/grpc/status.h), and a deadline
    can pass while the request is being applied.
    """
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    if isinstance(error, auth_exceptions.GoogleAuthError):
        return False  # no token, so no request
    if isinstance(error, api_exceptions.Aborted | api_exceptions.Cancelled):
        return True
    return not isinstance(error, api_exceptions.ClientError | api_exceptions.MethodNotImplemented)


def printed_message(data: bytes) -> Any:
    """The published data for the result line: its JSON value, or, for the bare-URL
    shorthand (which is not JSON), its text. The relay's parser accepted the data,
    so it is UTF-8."""
    text = data.decode("utf-8")
    try:
        return json.loads(text)
    except ValueError:
        return text


def publish(topic: str, data: bytes, attributes: Mapping[str, str], timeout: float = 30.0) -> str:
    from google.pubsub_v1 import PublisherClient

    publisher: Any = PublisherClient()  # generated client: publish is the RPC itself
    try:
        return publish_message(publisher, topic, data, attributes, timeout=timeout)
    finally:
        publisher.transport.close()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.publish",
        description=(
            "Check a callback message with the relay's own rules, then publish it to a"
            " Pub/Sub topic. Exit codes: 0 ok, 1 not published, 2 bad arguments or"
            " relay environment, 3 the relay would refuse the message, 4 the publish"
            " timed out or failed on the service's side: it may have been published."
        ),
    )
    parser.add_argument("--topic", help="topic id or projects/P/topics/T (not needed to check)")
    parser.add_argument("--project", help="project of a short topic id (default: environment)")
    built = parser.add_argument_group("build the message")
    built.add_argument("--url", help="the workflow's callback URL")
    built.add_argument("--payload", default="{}", help="JSON value sent as the callback body")
    built.add_argument("--method", default="POST", choices=CALLBACK_METHODS, help="callback method")
    built.add_argument(
        "--expires-in", type=float, metavar="SECONDS", help="set expires_at this far ahead"
    )
    built.add_argument(
        "--metadata", metavar="JSON", help="producer's own JSON object: logged, never sent"
    )
    parser.add_argument(
        "--message-file",
        metavar="FILE",
        help="use this file's bytes as the message data, unchanged ('-' for stdin)",
    )
    parser.add_argument(
        "--attribute", action="append", default=[], metavar="KEY=VALUE", help="message attribute"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check and print the message; do not publish"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up publishing after this long, retries included (exit 4)",
    )
    return parser


def _message_data(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bytes:
    if args.message_file is not None:
        if args.url is not None or args.metadata is not None or args.expires_in is not None:
            parser.error("--message-file replaces --url, --payload, --expires-in and --metadata")
        if args.message_file == "-":
            return sys.stdin.buffer.read()
        try:
            with open(args.message_file, "rb") as handle:
                return handle.read()
        except OSError as exc:
            parser.error(f"cannot read --message-file: {exc}")
    if args.url is None:
        parser.error("one of --url or --message-file is required")
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        parser.error(f"--payload is not JSON: {exc}")
    metadata = None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            parser.error(f"--metadata is not JSON: {exc}")
    if args.expires_in is not None and args.expires_in <= 0:
        parser.error("--expires-in must be positive")
    message = build_message(args.url, payload, args.method, args.expires_in, metadata=metadata)
    return encode_message(message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error("--timeout must be a positive number of seconds")
    data = _message_data(parser, args)
    topic = None
    try:
        attributes = parse_attributes(args.attribute)
        if args.topic is not None or not args.dry_run:
            if args.topic is None:
                parser.error("--topic is required to publish")
            topic = resource_path("topics", args.topic, default_project(args.project))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        accepted = check_with_relay_rules(data, os.environ)
    except ConfigError as exc:
        print(f"the relay's environment is invalid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RelayWouldRefuse as exc:
        print(f"the relay would refuse this message: {exc}", file=sys.stderr)
        print(waiting_step(data, os.environ), file=sys.stderr)
        print("not published", file=sys.stderr)
        return EXIT_REFUSED
    print(
        f"ok: the relay would call {accepted.message.method} {accepted.target.workflow_name}"
        f" callback {accepted.target.callback}",
        file=sys.stderr,
    )
    if args.dry_run:
        text = data.decode("utf-8", errors="replace")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    assert topic is not None
    try:
        message_id = publish(topic, data, attributes, args.timeout)
    except Exception as exc:  # noqa: BLE001 - a CLI reports any client error in one line
        print(f"publish to {topic} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if may_have_been_published(exc):
            print("it may have been published anyway; publishing again is safe", file=sys.stderr)
            return EXIT_MAYBE_PUBLISHED
        print("not published", file=sys.stderr)
        return EXIT_PUBLISH_FAILED
    # Published: from here on nothing may turn the exit code into a failure.
    report_published(topic, message_id, data)
    return EXIT_PUBLISHED


def report_published(topic: str, message_id: str, data: bytes) -> None:
    """One JSON line on stdout (ASCII, so that no stdout encoding can refuse it); if
    stdout is gone (a closed pipe), the message id goes to stderr instead."""
    printed = {"topic": topic, "message_id": message_id, "message": printed_message(data)}
    try:
        sys.stdout.write(json.dumps(printed) + "\n")
        sys.stdout.flush()
    except OSError as exc:
        print(f"published {message_id} to {topic}; stdout failed: {exc}", file=sys.stderr)
        # Point fd 1 at /dev/null, or the interpreter's own flush at exit fails again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
