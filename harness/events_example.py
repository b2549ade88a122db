"""scripts/run-local.sh --example events: keyed waits, end to end, hop by hop.

Starts the Firestore emulator (or uses the one at FIRESTORE_EMULATOR_HOST, with a
database of this run's own) and a relay function with keyed waits on
(EVENT_STORE=firestore, EVENT_TOPICS with a Cloud Storage bucket's notification
topic), routes the relay topic and the notification topic to it with Pub/Sub
push subscriptions on ``FUNCTION_URL/projects/P/topics/T`` (the emulator from
PUBSUB_EMULATOR_HOST), and runs workflow.yaml's ``await_event`` in the local
interpreter three times:

1. a workflow waits for ``gs://incoming/report.csv``; a simulated Cloud Storage
   notification (OBJECT_FINALIZE, as the bucket would publish it) resumes it;
2. an event for ``invoice:7`` is published *before* its wait; the wait is resumed
   at once;
3. three executions wait on ``order:42``; one event resumes all three.

Exit status 0 when every execution was resumed with its event, 1 otherwise.

    python -m harness.events_example --workflows-api HOST:PORT --metadata HOST:PORT
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.demo_driver import Trace, TracedCallbacks, report_calls, traced_log, traced_publish
from harness.firestore_emulator import firestore_emulator
from harness.relay_function import relay_function
from harness.workflow_bindings import WORKFLOW_YAML, HttpCallbacks, PubSubConnector, run_on_fakes

RELAY_TOPIC = "workflows-callback-relay-events"
BUCKET_TOPIC = "incoming-bucket-notifications"


def notification(bucket: str, name: str, generation: str) -> tuple[bytes, dict[str, str]]:
    """A Cloud Storage notification for a new object (payload format JSON_API_V1).

    Attributes as Google documents them for bucket notifications
    (https://cloud.google.com/storage/docs/pubsub-notifications); the data is the
    object's JSON API resource.
    """
    attributes = {
        "notificationConfig": f"projects/_/buckets/{bucket}/notificationConfigs/1",
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
        "bucketId": bucket,
        "objectId": name,
        "objectGeneration": generation,
        "eventTime": "2026-12-04T12:00:00.000000Z",
    }
    data = {
        "kind": "storage#object",
        "bucket": bucket,
        "name": name,
        "generation": generation,
        "contentType": "text/csv",
        "size": "2048",
    }
    return json.dumps(data).encode(), attributes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.events_example", description=__doc__)
    parser.add_argument("--workflows-api", required=True)
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--project", default=os.environ.get("PUBSUB_PROJECT_ID", "local-project"))
    parser.add_argument("--log-dir", type=Path)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        parser.error("--example events needs the Pub/Sub emulator (PUBSUB_EMULATOR_HOST)")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="events-example-"))
    suffix = f"-{int(time.time())}-{os.getpid()}"
    relay_topic = f"projects/{args.project}/topics/{RELAY_TOPIC}{suffix}"
    bucket_topic = f"projects/{args.project}/topics/{BUCKET_TOPIC}{suffix}"
    trace = Trace()
    callbacks = TracedCallbacks(HttpCallbacks(args.workflows_api), trace)
    results: dict[str, Any] = {}

    from google.api_core import exceptions as api_exceptions
    from google.cloud import pubsub_v1

    with contextlib.ExitStack() as exits:
        firestore = exits.enter_context(firestore_emulator(log_dir / "firestore"))
        print(f"Firestore emulator     {firestore.address}", flush=True)
        # A database of this run's own (the emulator keeps one per project): an emulator
        # left running from an earlier run still holds that run's kept order:42 event.
        database_project = f"{args.project}{suffix}"
        env = {
            "EVENT_STORE": "firestore",
            "GOOGLE_CLOUD_PROJECT": database_project,
            "FIRESTORE_EMULATOR_HOST": firestore.address,
            "EVENT_TOPICS": json.dumps({bucket_topic: "cloud-storage"}),
        }
        process, function_url = exits.enter_context(
            relay_function(
                log_dir,
                metadata_host=args.metadata,
                workflows_host=args.workflows_api,
                extra_env=env,
                threads=4,
            )
        )
        print(f"relay (keyed waits on) {function_url}", flush=True)
        publisher = pubsub_v1.PublisherClient()
        exits.callback(publisher.stop)
        subscriber = pubsub_v1.SubscriberClient()
        exits.callback(subscriber.close)
        for topic in (relay_topic, bucket_topic):
            with contextlib.suppress(api_exceptions.AlreadyExists):
                publisher.create_topic(name=topic)
            subscription = topic.replace("/topics/", "/subscriptions/") + "-push"
            # The push endpoint names the topic: functions-framework makes it the source.
            push = pubsub_v1.types.PushConfig(push_endpoint=f"{function_url}/{topic}")
            subscriber.create_subscription(name=subscription, topic=topic, push_config=push)
            exits.callback(subscriber.delete_subscription, subscription=subscription)
        connector = exits.enter_context(PubSubConnector.connect())
        publish = traced_publish(connector, trace)

        def send(topic: str, data: bytes, attributes: Mapping[str, str], what: str) -> None:
            message_id = publisher.publish(topic, data, **attributes).result(timeout=30)
            trace.hop("published", f"{what}: message {message_id} on {topic}")

        def await_event(label: str, key: str, source: str = "relay") -> None:
            try:
                results[label] = run_on_fakes(
                    WORKFLOW_YAML,
                    {"key": key, "source": source, "timeout": args.timeout, "topic": relay_topic},
                    callbacks=callbacks,
                    publish=publish,
                    workflow_id="events-example",
                    project_id=args.project,
                    log=traced_log(trace),
                    entry="await_event",
                )
                trace.hop("workflow", f"{label}: await_event returned {key}")
            except Exception as exc:  # noqa: BLE001 - reported with the others
                results[label] = {"error": str(exc)}

        def waiting(count: int) -> None:
            deadline = time.monotonic() + 20
            while len(firestore.documents(database_project, "relay_waits")) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError("the waits were never stored")
                time.sleep(0.05)

        trace.started = time.time()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            print("\n== 1. a workflow waits for gs://incoming/report.csv", flush=True)
            first = pool.submit(await_event, "report", "gs://incoming/report.csv", bucket_topic)
            waiting(1)
            data, attributes = notification("incoming", "report.csv", "1733313600000001")
            send(bucket_topic, data, attributes, "Cloud Storage notification OBJECT_FINALIZE")
            first.result(timeout=60)

            print("\n== 2. an event before its wait", flush=True)
            event = {"kind": "event", "key": "invoice:7", "payload": {"paid": True}}
            send(relay_topic, json.dumps(event).encode(), {}, "event invoice:7")
            time.sleep(0.5)  # delivered and kept before anyone waits
            pool.submit(await_event, "invoice", "invoice:7").result(timeout=60)

            print(
                "\n== 3. three executions wait on order:42; one event resumes all three", flush=True
            )
            three = [pool.submit(await_event, f"order-{n}", "order:42") for n in range(3)]
            waiting(5)  # the report's, the invoice's and these three waits
            event = {"kind": "event", "key": "order:42", "payload": {"status": "shipped"}}
            send(relay_topic, json.dumps(event).encode(), {}, "event order:42")
            for future in three:
                future.result(timeout=60)
        time.sleep(0.3)  # the function's last log lines

    for url in callbacks.urls:
        report_calls(args.workflows_api, url, trace)
    print("\n--- every hop, in time order ---")
    print(trace.summary())
    print("\n--- the relay's outcomes ---")
    for line in process.lines():
        if '"outcome"' in line:
            entry = json.loads(line)
            keyed = entry.get("keyed", {})
            print(f"{entry['outcome']:<16} {keyed.get('key', '')}  {entry['reason'][:110]}")
    print("\n--- what each execution received ---")
    print(json.dumps(results, indent=2, ensure_ascii=False))
    resumed = all(isinstance(r, dict) and "payload" in r for r in results.values())
    return 0 if resumed and len(results) == 5 else 1


if __name__ == "__main__":
    sys.exit(main())
