"""A worker: pull a job from the jobs subscription, do the work, publish the result.

    python examples/worker/worker.py --subscription worker-example-jobs \
        --relay-topic workflows-callback-relay [--max-jobs 1] [--fail | --broken]

--subscription and --relay-topic default to JOBS_SUBSCRIPTION and RELAY_TOPIC, which
scripts/run-local.sh --example worker --worker-command sets.

The job is what examples/worker/workflow.yaml publishes:
    {"callback_url": ..., "method": "POST", "expires_at": RFC 3339, "job": {"text": ...}}
The result goes to the relay topic as {"callback_url", "payload", "method",
"expires_at"}, the three fields copied from the job unchanged; the relay calls the
callback and the workflow resumes with the payload. The work here counts the words
of job.text and upper-cases it.

  --fail    fail the workflow step on purpose: payload {"error": {code, message, details}}
            makes the waiting step raise CallbackError.
  --broken  publish a message with a typo ("payloa"): the relay refuses it and, with
            FAIL_FAST_INVALID_MESSAGES on, fails the waiting step at once.

A job is acknowledged only once its result is published, so a crash or a failed
publish redelivers it. A job that can never be answered (not JSON, no callback_url)
and a job already past expires_at are acknowledged and logged, never retried.
Each outcome is one JSON line on stdout.

Project: --project, or GOOGLE_CLOUD_PROJECT / PUBSUB_PROJECT_ID. Locally, set
PUBSUB_EMULATOR_HOST. Needs only google-cloud-pubsub (requirements.txt). A
subscription that does not exist ends the worker with exit 2 and the names of
those that do.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1

PROJECT_ENV_VARS = ("GOOGLE_CLOUD_PROJECT", "PUBSUB_PROJECT_ID")
JOB_FIELDS = ("callback_url", "method", "expires_at")


class PoisonJob(ValueError):
    """A job no worker can ever answer: there is no callback to send a result to."""


class BadJob(ValueError):
    """The job has a callback but cannot be done: the step is failed with this reason."""


class NoSuchSubscription(LookupError):
    """The jobs subscription does not exist; the message names those that do."""


def read_job(data: bytes) -> dict[str, Any]:
    try:
        job = json.loads(data)
    except ValueError as exc:
        raise PoisonJob(f"job is not JSON: {exc}") from None
    if not isinstance(job, dict) or not isinstance(job.get("callback_url"), str):
        raise PoisonJob("job has no callback_url")
    return job


def expired(job: dict[str, Any], now: datetime.datetime) -> bool:
    raw = job.get("expires_at")
    if not isinstance(raw, str):
        return False
    try:
        deadline = datetime.datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError:
        return False  # the relay judges the date; the worker only skips obvious waste
    return now >= deadline


def do_work(work: Any) -> dict[str, Any]:
    """The job's actual work: here, count the words of a text and upper-case it."""
    if not isinstance(work, dict) or not isinstance(work.get("text"), str):
        raise BadJob('job must be {"text": string}')
    text = work["text"]
    return {"text": text.upper(), "words": len(text.split())}


def relay_message(job: dict[str, Any], payload: Any) -> dict[str, Any]:
    """Copy callback_url, method and expires_at from the job; the result is the payload."""
    message = {"callback_url": job["callback_url"], "payload": payload}
    message.update({name: job[name] for name in ("method", "expires_at") if name in job})
    return message


def error_payload(code: str, message: str, details: Any) -> dict[str, Any]:
    """A payload that makes the waiting step raise CallbackError."""
    return {"error": {"code": code, "message": message, "details": details}}


def broken_message(job: dict[str, Any], payload: Any) -> dict[str, Any]:
    """The relay message with a typo a worker could make: 'payloa' for 'payload'."""
    message = relay_message(job, payload)
    message["payloa"] = message.pop("payload")
    return message


def answer(job: dict[str, Any], mode: str) -> tuple[str, dict[str, Any]]:
    """The outcome name and the message to publish for one job."""
    if mode == "fail":
        reason = "the worker failed this job on purpose (--fail)"
        failure = error_payload("WORKER_FAILED", reason, {"job": job.get("job")})
        return "failed_on_purpose", relay_message(job, failure)
    try:
        result = do_work(job.get("job"))
    except BadJob as exc:
        return "bad_job", relay_message(job, error_payload("BAD_JOB", str(exc), {}))
    if mode == "broken":
        return "published_broken", broken_message(job, result)
    return "resumed", relay_message(job, result)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def log(event: str, **fields: Any) -> None:
    line = {"event": event, "at": round(time.time(), 3), **fields}
    print(json.dumps(line, ensure_ascii=False), flush=True)


class Worker:
    def __init__(
        self, project: str, subscription: str, relay_topic: str, mode: str = "work"
    ) -> None:
        self.subscriber = pubsub_v1.SubscriberClient()
        self.publisher = pubsub_v1.PublisherClient()
        self.subscription = self._path("subscriptions", subscription, project)
        self.relay_topic = self._path("topics", relay_topic, project)
        self.mode = mode

    @staticmethod
    def _path(kind: str, name: str, project: str) -> str:
        return name if name.startswith("projects/") else f"projects/{project}/{kind}/{name}"

    def close(self) -> None:
        self.subscriber.close()
        self.publisher.transport.close()

    def pull_one(self, wait: float) -> Any | None:
        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": 1}, timeout=wait
            )
        except api_exceptions.DeadlineExceeded:
            return None
        except api_exceptions.NotFound:
            raise NoSuchSubscription(self._missing_subscription()) from None
        received = list(response.received_messages)
        return received[0] if received else None

    def _missing_subscription(self) -> str:
        project = self.subscription.split("/")[1]
        try:
            names = sorted(
                s.name.rsplit("/", 1)[-1]
                for s in self.subscriber.list_subscriptions(
                    request={"project": f"projects/{project}"}
                )
            )
        except api_exceptions.GoogleAPICallError as exc:  # e.g. no permission to list
            return f"subscription {self.subscription} does not exist ({exc.message})"
        listed = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") or "none"
        return (
            f"subscription {self.subscription} does not exist;"
            f" subscriptions in projects/{project}: {listed}"
        )

    def handle(self, received: Any) -> str:
        """Answer one job; acknowledge it unless its result could not be published."""
        job_id = received.message.message_id
        try:
            job = read_job(received.message.data)
        except PoisonJob as exc:
            log("job_poison", job_message_id=job_id, reason=str(exc))
            self._ack(received)
            return "poison"
        if expired(job, datetime.datetime.now(datetime.UTC)):
            log("job_expired", job_message_id=job_id, expires_at=job.get("expires_at"))
            self._ack(received)
            return "expired"
        outcome, message = answer(job, self.mode)
        try:
            published = self.publisher.publish(self.relay_topic, encode(message)).result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - any publish failure: let Pub/Sub redeliver
            log("result_not_published", job_message_id=job_id, error=f"{type(exc).__name__}: {exc}")
            self.subscriber.modify_ack_deadline(
                request={
                    "subscription": self.subscription,
                    "ack_ids": [received.ack_id],
                    "ack_deadline_seconds": 0,
                }
            )
            return "redelivery"
        log(outcome, job_message_id=job_id, relay_message_id=str(published), topic=self.relay_topic)
        self._ack(received)
        return outcome

    def _ack(self, received: Any) -> None:
        self.subscriber.acknowledge(
            request={"subscription": self.subscription, "ack_ids": [received.ack_id]}
        )

    def run(self, max_jobs: int | None, idle_timeout: float | None) -> int:
        handled = 0
        idle_since = time.monotonic()
        while max_jobs is None or handled < max_jobs:
            received = self.pull_one(wait=5.0)
            if received is None:
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    log("worker_idle", handled=handled, idle_seconds=idle_timeout)
                    break
                continue
            self.handle(received)
            handled += 1
            idle_since = time.monotonic()
        return handled


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python examples/worker/worker.py",
        description="Pull jobs, do the work, publish each result to the relay topic.",
    )
    parser.add_argument("--project", help="default: GOOGLE_CLOUD_PROJECT or PUBSUB_PROJECT_ID")
    parser.add_argument(
        "--subscription",
        default=os.environ.get("JOBS_SUBSCRIPTION"),
        help="the jobs subscription (default: JOBS_SUBSCRIPTION)",
    )
    parser.add_argument(
        "--relay-topic",
        default=os.environ.get("RELAY_TOPIC", "workflows-callback-relay"),
        help="the relay's topic (default: RELAY_TOPIC, else workflows-callback-relay)",
    )
    parser.add_argument("--max-jobs", type=int, help="stop after this many jobs")
    parser.add_argument(
        "--idle-timeout", type=float, metavar="SECONDS", help="stop after this long without jobs"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fail", action="store_true", help="fail each job's step on purpose")
    mode.add_argument("--broken", action="store_true", help="publish a message with a typo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    project = args.project or next(
        (os.environ[name] for name in PROJECT_ENV_VARS if os.environ.get(name)), None
    )
    if not project:
        parser.error(f"pass --project or set {' or '.join(PROJECT_ENV_VARS)}")
    if not args.subscription:
        parser.error("pass --subscription or set JOBS_SUBSCRIPTION")
    mode = "fail" if args.fail else "broken" if args.broken else "work"
    worker = Worker(project, args.subscription, args.relay_topic, mode)
    try:
        worker.run(args.max_jobs, args.idle_timeout)
    except NoSuchSubscription as exc:
        log("no_such_subscription", reason=str(exc))
        print(f"worker.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
