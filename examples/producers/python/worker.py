"""A worker: pull jobs from the jobs subscription, do the work, publish each result to
the relay topic, and only then acknowledge the job (a crash leaves it for redelivery).

    python worker.py [--fail | --broken] [--max-jobs N]

--fail fails each waiting step on purpose (CallbackError WORKER_FAILED); --broken
publishes a result with a typo ("payloa"), which the relay fails fast (CallbackError
INVALID_MESSAGE). Needs google-cloud-pubsub, GOOGLE_CLOUD_PROJECT, JOBS_SUBSCRIPTION and
RELAY_TOPIC (default workflows-callback-relay); locally also PUBSUB_EMULATOR_HOST.
The job: {"callback_url", "method", "expires_at", "job": {"text": ...}}.
"""

import json
import os
import sys
from typing import Any

from google.api_core.exceptions import DeadlineExceeded
from google.cloud import pubsub_v1
from publish_result import PROJECT, RELAY_TOPIC, error_payload, relay_message


def do_work(work: dict[str, Any]) -> dict[str, Any]:
    """The work: count the words of job.text and upper-case it."""
    return {"text": work["text"].upper(), "words": len(work["text"].split())}


def answer(job: dict[str, Any], mode: str) -> dict[str, Any]:
    """The message for one job, as the relay topic expects it."""
    if mode == "fail":
        return relay_message(job, error_payload("WORKER_FAILED", "the worker failed on purpose"))
    message = relay_message(job, do_work(job["job"]))
    if mode == "broken":
        message["payloa"] = message.pop("payload")  # the typo the relay fails fast
    return message


def main(args: list[str]) -> None:
    mode = "fail" if "--fail" in args else "broken" if "--broken" in args else "work"
    max_jobs = int(args[args.index("--max-jobs") + 1]) if "--max-jobs" in args else None
    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    subscription = subscriber.subscription_path(PROJECT, os.environ["JOBS_SUBSCRIPTION"])
    topic = publisher.topic_path(PROJECT, RELAY_TOPIC)
    handled = 0
    while max_jobs is None or handled < max_jobs:
        try:  # NotFound: no subscription JOBS_SUBSCRIPTION in GOOGLE_CLOUD_PROJECT
            response = subscriber.pull(subscription=subscription, max_messages=1, timeout=30)
        except DeadlineExceeded:
            continue
        for received in response.received_messages:
            job = json.loads(received.message.data)
            data = json.dumps(answer(job, mode), separators=(",", ":"), ensure_ascii=False)
            message_id = publisher.publish(topic, data.encode("utf-8")).result(timeout=60)
            # Only once the result is published: a crash before this redelivers the job.
            subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
            line = {"event": mode, "job_message_id": received.message.message_id}
            print(json.dumps({**line, "relay_message_id": message_id}), flush=True)
            handled += 1


if __name__ == "__main__":
    main(sys.argv[1:])
