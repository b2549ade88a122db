"""examples/worker/worker.py on the emulator: a jobs topic in, a stand-in relay subscription out."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from callback_relay.callback_url_policy import CallbackUrlPolicy
from callback_relay.errors import MessageRejected
from callback_relay.message import parse_message_data
from harness.processes import child_env
from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import available_now, publish, pull, remaining

REPO = Path(__file__).resolve().parents[2]
WORKER = str(REPO / "examples" / "worker" / "worker.py")
URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/my-project/locations/us-central1"
    "/workflows/worker-example/executions/e-1/callbacks/cb-1"
)
FUTURE = "2099-01-01T00:00:00.000000Z"
pytestmark = pytest.mark.emulator


def job(work: Any = None, **overrides: Any) -> dict[str, Any]:
    return {
        "callback_url": URL,
        "method": "POST",
        "expires_at": FUTURE,
        "job": {"text": "hello brave new world"} if work is None else work,
        **overrides,
    }


@dataclasses.dataclass
class Topics:
    emulator: PubSubEmulator
    jobs_topic: str
    jobs_sub: str
    relay_topic: str
    relay_sub: str

    def run_worker(self, *args: str, relay_topic: str | None = None) -> list[dict[str, Any]]:
        result = subprocess.run(
            [
                sys.executable, WORKER, "--subscription", self.jobs_sub,
                "--relay-topic", relay_topic or self.relay_topic,
                "--max-jobs", "1", "--idle-timeout", "30", *args,
            ],
            env=child_env({**self.emulator.env(), "GOOGLE_CLOUD_PROJECT": self.emulator.project}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    def published(self) -> list[bytes]:
        return [bytes(m.message.data) for m in pull(self.emulator, self.relay_sub, expected=1)]

    def nothing_published(self) -> bool:
        return remaining(self.emulator, self.relay_sub) == []

    def jobs_left(self) -> int:
        # Counts a job the worker leased and neither acked nor nacked.
        return len(remaining(self.emulator, self.jobs_sub))


@pytest.fixture
def topics(emulator: PubSubEmulator) -> Topics:
    jobs_topic, relay_topic = unique_name("jobs"), unique_name("relay")
    emulator.create_topic(jobs_topic)
    emulator.create_topic(relay_topic)
    return Topics(
        emulator,
        jobs_topic,
        emulator.create_subscription(unique_name("jobs-worker"), jobs_topic),
        relay_topic,
        emulator.create_subscription(unique_name("relay-fake"), relay_topic),
    )


def send_job(topics: Topics, data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return publish(topics.emulator, topics.jobs_topic, raw, content_type="application/json")


def test_a_job_is_answered_with_its_result(topics: Topics) -> None:
    job_id = send_job(topics, job())

    (logged,) = topics.run_worker()

    (data,) = topics.published()
    message = parse_message_data(data, 65536)
    assert (message.callback_url, message.method) == (URL, "POST")
    assert json.loads(data)["expires_at"] == FUTURE
    assert json.loads(message.body or b"") == {"text": "HELLO BRAVE NEW WORLD", "words": 4}
    assert logged["event"] == "resumed"
    assert logged["job_message_id"] == job_id
    assert topics.jobs_left() == 0


def test_fail_mode_fails_the_step_with_an_error_body(topics: Topics) -> None:
    send_job(topics, job())

    (logged,) = topics.run_worker("--fail")

    (data,) = topics.published()
    body = json.loads(parse_message_data(data, 65536).body or b"")
    assert body == {
        "error": {
            "code": "WORKER_FAILED",
            "message": "the worker failed this job on purpose (--fail)",
            "details": {"job": {"text": "hello brave new world"}},
        }
    }
    assert logged["event"] == "failed_on_purpose"


def test_broken_mode_publishes_a_typo_the_relay_refuses_but_can_fail_fast(
    topics: Topics,
) -> None:
    send_job(topics, job())

    (logged,) = topics.run_worker("--broken")

    (data,) = topics.published()
    with pytest.raises(MessageRejected) as refused:
        parse_message_data(data, 65536)
    assert refused.value.reason == "unknown_field"
    assert "payloa" in refused.value.detail
    # The callback URL is intact and allowed, which is what lets the relay fail fast.
    assert CallbackUrlPolicy().check(json.loads(data)["callback_url"]).callback == "cb-1"
    assert logged["event"] == "published_broken"


def test_a_job_that_cannot_be_done_fails_its_step(topics: Topics) -> None:
    send_job(topics, job(work={"numbers": [1, 2]}))

    (logged,) = topics.run_worker()

    (data,) = topics.published()
    body = json.loads(parse_message_data(data, 65536).body or b"")
    assert body["error"]["code"] == "BAD_JOB"
    assert logged["event"] == "bad_job"


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (b"not json", "job_poison"),
        (json.dumps({"job": {"text": "no callback"}}).encode(), "job_poison"),
        (json.dumps(job(expires_at="2001-01-01T00:00:00Z")).encode(), "job_expired"),
    ],
)
def test_jobs_that_cannot_be_answered_are_acknowledged_and_logged(
    topics: Topics, data: bytes, event: str
) -> None:
    send_job(topics, data)

    (logged,) = topics.run_worker()

    assert logged["event"] == event
    assert topics.nothing_published()
    assert topics.jobs_left() == 0


def test_a_result_that_cannot_be_published_leaves_the_job_for_redelivery(topics: Topics) -> None:
    send_job(topics, job())

    (logged,) = topics.run_worker(relay_topic=unique_name("no-such-relay-topic"))

    assert logged["event"] == "result_not_published"
    assert "NotFound" in logged["error"]
    # Nacked, not left to its ack deadline: it is back at once.
    (redelivered,) = available_now(topics.emulator, topics.jobs_sub)
    assert json.loads(redelivered.message.data) == job()


def test_a_missing_subscription_names_the_ones_that_exist(topics: Topics) -> None:
    # The likeliest local mistake: a subscription name nothing created.
    missing = unique_name("jobs-worker-typo")
    result = subprocess.run(
        [sys.executable, WORKER, "--max-jobs", "1"],
        env=child_env(
            {
                **topics.emulator.env(),
                "GOOGLE_CLOUD_PROJECT": topics.emulator.project,
                "JOBS_SUBSCRIPTION": missing,
                "RELAY_TOPIC": topics.relay_topic,
            }
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"subscriptions/{missing} does not exist" in result.stderr
    assert topics.jobs_sub.rsplit("/", 1)[-1] in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["event"] == "no_such_subscription"


def test_the_subscription_and_relay_topic_come_from_the_environment(topics: Topics) -> None:
    send_job(topics, job())
    result = subprocess.run(
        [sys.executable, WORKER, "--max-jobs", "1", "--idle-timeout", "30"],
        env=child_env(
            {
                **topics.emulator.env(),
                "GOOGLE_CLOUD_PROJECT": topics.emulator.project,
                "JOBS_SUBSCRIPTION": topics.jobs_sub.rsplit("/", 1)[-1],
                "RELAY_TOPIC": topics.relay_topic,
            }
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["event"] == "resumed"
    assert len(topics.published()) == 1
