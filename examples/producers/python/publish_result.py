"""Resume the workflow that sent a job: publish the worker's result to the relay topic.

    python publish_result.py '{"status": "shipped"}' < job.json    # resume the step
    python publish_result.py --fail CODE MESSAGE [DETAILS] < job.json  # fail it on purpose

The job comes from the workflow and carries callback_url, method and expires_at.
Needs google-cloud-pubsub, GOOGLE_CLOUD_PROJECT, and RELAY_TOPIC (default
workflows-callback-relay). Contract: schemas/callback-message.schema.json.
"""

import json
import os
import sys
from typing import Any

from google.cloud import pubsub_v1

PROJECT = os.environ["GOOGLE_CLOUD_PROJECT"]
RELAY_TOPIC = os.environ.get("RELAY_TOPIC", "workflows-callback-relay")


def relay_message(job: dict[str, Any], payload: Any) -> dict[str, Any]:
    """Copy callback_url, method and expires_at from the job; the result is the payload."""
    return {
        "callback_url": job["callback_url"],
        "payload": payload,
        "method": job["method"],
        "expires_at": job["expires_at"],
    }


def error_payload(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """A payload that makes the waiting step raise CallbackError."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def publish(publisher: pubsub_v1.PublisherClient, job: dict[str, Any], payload: Any) -> str:
    message = relay_message(job, payload)
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    topic = publisher.topic_path(PROJECT, RELAY_TOPIC)
    return str(publisher.publish(topic, data).result(timeout=60))  # the message id


def main(args: list[str]) -> None:
    job = json.load(sys.stdin)
    if args[:1] == ["--fail"]:
        details = json.loads(args[3]) if len(args) > 3 else {}
        payload = error_payload(args[1], args[2], details)
    else:
        payload = json.loads(args[0])
    print(publish(pubsub_v1.PublisherClient(), job, payload))


if __name__ == "__main__":
    main(sys.argv[1:])
