"""examples/worker/workflow.yaml: the job it publishes, what it returns and logs, its constructs.

Executing it is the job of the local Workflows interpreter (the end-to-end test);
these checks read the file: the job message matches what worker.py reads, headers
never leave the callback request, and only the constructs of ../../workflow.yaml
are used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

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
