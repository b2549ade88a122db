"""examples/worker/workflow.yaml: the job it publishes, what it returns and logs, its constructs.

The first checks read the file: the job message matches what worker.py reads,
headers never leave the callback request, and only the constructs of
../../workflow.yaml are used. The rest execute it in the local Workflows interpreter
with scripted callbacks (no server): the timeout path and its CallbackTimeout tag,
the result and error answers, and an error that is not a timeout. The end-to-end
runs with worker.py are in tests/system/test_worker_example.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path
from typing import Any

import yaml

from harness.workflow_bindings import (
    OfflineCallbacks,
    PublishedMessage,
    RecordingPublisher,
    run_on_fakes,
)
from harness.workflow_interpreter import ExecutionFailed, LogEntry, WorkflowError

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_PATH = REPO / "examples" / "worker" / "workflow.yaml"
TEXT = WORKFLOW_PATH.read_text()
WORKFLOW = yaml.safe_load(TEXT)
STEP_KEYS = {"assign", "switch", "try", "except", "raise", "return", "call", "args", "result"}
FUNCTIONS = {
    "map.get", "default", "text.match_regex", "sys.get_env", "sys.now", "time.format",
    "base64.encode", "json.encode", "string",
}  # fmt: skip
CALLS = {
    "events.create_callback_endpoint",
    "events.await_callback",
    "googleapis.pubsub.v1.projects.topics.publish",
    "sys.log",
    "await_job",
}


def steps_of(steps: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for item in steps:
        ((name, body),) = item.items()
        found.append((name, body))
        for nested in (body.get("steps"), (body.get("except") or {}).get("steps")):
            if nested:
                found.extend(steps_of(nested))
        if "try" in body and "steps" in body["try"]:
            found.extend(steps_of(body["try"]["steps"]))
    return found


ALL_STEPS = {
    f"{block}.{name}": body
    for block, definition in WORKFLOW.items()
    for name, body in steps_of(definition["steps"])
}


def expressions() -> list[str]:
    return re.findall(r"\$\{(.*?)\}(?:'|\"|$)", TEXT, re.MULTILINE)


def code_lines() -> str:
    return "\n".join(line for line in TEXT.splitlines() if not line.lstrip().startswith("#"))


def test_the_job_carries_what_the_worker_copies() -> None:
    (build,) = [body for name, body in ALL_STEPS.items() if name == "await_job.build_job"]
    (job_message,) = [a["job_message"] for a in build["assign"] if "job_message" in a]
    assert list(job_message) == ["callback_url", "method", "expires_at", "job"]
    assert job_message["callback_url"] == "${callback.url}"
    assert job_message["expires_at"] == "${time.format(started + timeout)}"


def test_headers_are_never_read_returned_or_logged() -> None:
    code = code_lines()
    assert "headers" not in code
    reads = re.findall(r"http_request(\.\w+)?", code)
    assert sorted(set(reads)) == [".body", ".method", ".query"]
    assert "callback_request: null" in code  # the whole request is dropped once read


def test_the_subworkflow_returns_only_what_a_caller_needs() -> None:
    result = ALL_STEPS["await_job.result"]["return"]
    assert list(result) == ["body", "method", "query", "received_at"]
    for name, body in ALL_STEPS.items():
        if body.get("call") == "sys.log":
            logged = " ".join(str(v) for v in body["args"]["json"].values())
            assert "callback_request" not in logged, name


def test_only_the_root_workflow_constructs_are_used() -> None:
    for name, body in ALL_STEPS.items():
        keys = set(body) - {"steps"}
        if "try" in body:
            keys |= set(body["try"]) - {"steps"}
        assert keys <= STEP_KEYS, (name, keys - STEP_KEYS)
        if "call" in body:
            assert body["call"] in CALLS, name
    called = {m for e in expressions() for m in re.findall(r"([a-z_][\w.]*)\(", e)}
    assert called <= FUNCTIONS, called - FUNCTIONS
    assert WORKFLOW["await_job"]["params"] == [
        "jobs_topic", "job", {"timeout": 43200}, {"method": "POST"},
    ]  # fmt: skip


# -- executed: the timeout path, the answers, and an error that is not a timeout --

NOW = 1_720_788_633.25
PROJECT = "p"


class ScriptedCallbacks(OfflineCallbacks):
    """Callbacks in Google's URL shape whose await gives `answer` (None: the wait
    times out; an exception: raised into the workflow), recording each wait's timeout."""

    def __init__(self, answer: Any = None) -> None:
        super().__init__(project=PROJECT, execution_id="e-1")
        self.answer = answer
        self.timeouts: list[float] = []

    def await_callback(self, url: str, timeout: float) -> dict[str, Any] | None:
        self.timeouts.append(timeout)
        if isinstance(self.answer, Exception):
            raise self.answer
        answer: dict[str, Any] | None = self.answer
        return answer


@dataclasses.dataclass
class Run:
    result: Any
    error: Any
    published: list[PublishedMessage]
    timeouts: list[float]
    logged: list[LogEntry]


def run_example(arguments: Any, answer: Any = None, entry: str = "main") -> Run:
    callbacks = ScriptedCallbacks(answer)
    recorder = RecordingPublisher()
    logged: list[LogEntry] = []
    result = error = None
    try:
        result = run_on_fakes(
            WORKFLOW_PATH,
            arguments,
            callbacks=callbacks,
            publish=recorder,
            workflow_id="worker-example",
            now=lambda: NOW,
            log=logged.append,
            entry=entry,
        )
    except ExecutionFailed as failed:
        error = failed.error
    return Run(result, error, recorder.published, callbacks.timeouts, logged)


def formatted(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def answer_with(body: Any) -> dict[str, Any]:
    return {
        "http_request": {
            "body": body,
            "method": "POST",
            "query": {"q": ["1"]},
            "headers": {"Authorization": "Bearer relay-token"},
        },
        "received_time": "ignored",
    }


def test_no_result_in_time_is_reported_as_timed_out_with_the_topic_and_timeout() -> None:
    run = run_example({"job": {"text": "a b"}, "timeout": 30, "jobs_topic": "jobs"})

    assert run.error is None
    assert run.result == {
        "status": "TIMED_OUT",
        "message": "no result within 30 s for the job on projects/p/topics/jobs",
    }
    assert run.timeouts == [30]
    (job,) = run.published
    assert job.topic == "projects/p/topics/jobs"
    assert job.message == {
        "callback_url": (
            "https://workflowexecutions.googleapis.com/v1/projects/p/locations/us-central1"
            "/workflows/worker-example/executions/e-1/callbacks/c-1"
        ),
        "method": "POST",
        "expires_at": formatted(NOW + 30),
        "job": {"text": "a b"},
    }
    assert job.attributes == {
        "content_type": "application/json",
        "workflow_id": "worker-example",
        "execution_id": "e-1",
    }


def test_the_defaults_wait_600_s_on_the_default_jobs_topic() -> None:
    run = run_example(None)

    assert run.timeouts == [600]
    (job,) = run.published
    assert job.topic == "projects/p/topics/worker-example-jobs"
    assert job.message["expires_at"] == formatted(NOW + 600)
    assert job.message["job"] == {"text": "hello from the worker example"}
    assert run.result["status"] == "TIMED_OUT"


def test_the_subworkflow_raises_callback_timeout_with_the_job_s_ids() -> None:
    run = run_example(
        {"jobs_topic": "projects/other/topics/t", "job": 7, "timeout": 5}, entry="await_job"
    )

    (job,) = run.published
    assert job.topic == "projects/other/topics/t"
    assert run.error == {
        "tags": ["CallbackTimeout", "TimeoutError"],
        "message": "no result within 5 s for the job on projects/other/topics/t",
        "message_id": job.message_id,
        "expires_at": formatted(NOW + 5),
    }
    assert run.timeouts == [5]


def test_the_subworkflow_waits_43200_s_by_default() -> None:
    run = run_example({"jobs_topic": "t", "job": 1}, entry="await_job")

    assert run.timeouts == [43200]
    assert run.error["expires_at"] == formatted(NOW + 43200)


def test_a_result_resumes_with_its_body_and_never_the_headers() -> None:
    run = run_example({"timeout": 60}, answer=answer_with({"text": "A B", "words": 2}))

    assert run.error is None
    assert run.result == {
        "status": "DONE",
        "result": {"text": "A B", "words": 2},
        "received_at": formatted(NOW),
    }
    assert "relay-token" not in repr([entry.payload for entry in run.logged])
    events = [entry.payload["event"] for entry in run.logged]
    assert events == ["job_published", "job_result_received"]


def test_an_error_body_fails_the_execution_with_callback_error() -> None:
    failure = {"code": "WORKER_FAILED", "message": "no", "details": {"n": 1}}
    run = run_example({"timeout": 60}, answer=answer_with({"error": failure}))

    assert run.result is None
    assert run.error == {"tags": ["CallbackError"], **failure}


def test_an_error_body_without_code_or_message_gets_defaults() -> None:
    run = run_example({"timeout": 60}, answer=answer_with({"error": {}}))

    assert run.error == {
        "tags": ["CallbackError"],
        "code": "UNKNOWN",
        "message": "the worker reported an error",
        "details": None,
    }


def test_an_error_that_is_not_a_timeout_is_raised_unchanged() -> None:
    broken = {"tags": ["ConnectionError"], "message": "callback API unreachable"}
    run = run_example({"timeout": 60}, answer=WorkflowError(dict(broken)))

    assert run.result is None
    assert run.error == broken
