"""workflow.yaml: its structure, read from the YAML, and its message, from running it.

Static checks read the YAML directly. What the workflow publishes comes from
executing workflow.yaml in the local interpreter (harness.workflow_interpreter)
with a publish binding that only records (harness.workflow_bindings.
published_by_workflow), so the checks see exactly the bytes the workflow's own
steps produce, and check them against the relay's parser and the schema.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from callback_relay.message import parse_message_data
from harness.workflow_bindings import OfflineCallbacks, WorkflowPublication, published_by_workflow
from harness.workflow_interpreter import WorkflowDefinition, load_workflow

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "schemas" / "callback-message.schema.json"
DEPLOY_SH = REPO / "deploy.sh"
WORKFLOW_DOC = REPO / "docs" / "workflow.md"
CALLBACK_URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/p/locations/us-central1"
    "/workflows/callback-relay-demo/executions/e-1/callbacks/c-1"
)
NOW = 1_720_788_633.25

WORKFLOW_YAML = REPO / "workflow.yaml"
SUBWORKFLOW = "await_via_pubsub"
PUBLISH_CONNECTOR = "googleapis.pubsub.v1.projects.topics.publish"

# Functions and connectors the workflow may call: anything else is a typo.
KNOWN_CALLS = {
    "events.create_callback_endpoint",
    "events.await_callback",
    "sys.log",
    PUBLISH_CONNECTOR,
}


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    loaded = yaml.safe_load(WORKFLOW_YAML.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def definition() -> WorkflowDefinition:
    return load_workflow(WORKFLOW_YAML)


def iter_steps(steps: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """All (name, body) pairs in a step list, depth first, through try/except/switch."""
    found: list[tuple[str, dict[str, Any]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, dict) and key not in ("args", "body", "json", "return"):
                    found.append((str(key), value))
                visit(value)

    visit(steps)
    return found


def find_step(workflow: Mapping[str, Any], name: str, block: str = SUBWORKFLOW) -> dict[str, Any]:
    for step_name, body in iter_steps(workflow[block]["steps"]):
        if step_name == name:
            return body
    raise KeyError(f"no step {name!r} in {block}")


def publish_once(
    definition: WorkflowDefinition,
    arguments: Any,
    *,
    project: str = "p",
    entry: str = "main",
) -> WorkflowPublication:
    """Run workflow.yaml at NOW with callback c-1 of execution e-1: what it publishes."""
    return published_by_workflow(
        arguments,
        workflow=definition,
        callbacks=OfflineCallbacks(project=project, execution_id="e-1"),
        now=lambda: NOW,
        entry=entry,
    )


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def step_names(steps: list[dict[str, Any]]) -> list[str]:
    return [next(iter(step)) for step in steps]


def all_expressions(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node] if "${" in node else []
    if isinstance(node, dict):
        return [
            e for key, value in node.items() for e in all_expressions(key) + all_expressions(value)
        ]
    if isinstance(node, list):
        return [e for item in node for e in all_expressions(item)]
    return []


# -- shape --------------------------------------------------------------------


def test_yaml_parses_into_main_and_the_subworkflow(workflow: dict[str, Any]) -> None:
    assert set(workflow) == {"main", "await_via_pubsub", "await_event"}
    assert workflow["main"]["params"] == ["args"]


def test_subworkflow_params_and_defaults(workflow: dict[str, Any]) -> None:
    assert workflow["await_via_pubsub"]["params"] == [
        "topic",
        {"payload": {}},
        {"timeout": 43200},
        {"method": "POST"},
    ]


def test_subworkflow_steps_in_order(workflow: dict[str, Any]) -> None:
    assert step_names(workflow["await_via_pubsub"]["steps"]) == [
        "resolve_topic",
        "create_callback",
        "build_message",
        "publish",
        "log_published",
        "wait_for_callback",
        "inspect_body",
        "fail_on_error_body",
        "log_resumed",
        "result",
    ]


def test_main_calls_the_subworkflow_with_topic_payload_timeout(workflow: dict[str, Any]) -> None:
    call = find_step(workflow, "wait_for_relay", block="main")["try"]
    assert call["call"] == "await_via_pubsub"
    assert call["args"] == {"topic": "${topic}", "payload": "${payload}", "timeout": "${timeout}"}


def test_create_callback_endpoint(workflow: dict[str, Any]) -> None:
    step = find_step(workflow, "create_callback")
    assert step == {
        "call": "events.create_callback_endpoint",
        "args": {"http_callback_method": "${method}"},
        "result": "callback",
    }


def test_publish_uses_the_connector_with_documented_arguments(workflow: dict[str, Any]) -> None:
    step = find_step(workflow, "publish")
    assert step["call"] == "googleapis.pubsub.v1.projects.topics.publish"
    assert set(step["args"]) == {"topic", "body"}
    assert step["args"]["topic"] == "${topic_name}"
    (message,) = step["args"]["body"]["messages"]
    assert message["data"] == "${base64.encode(json.encode(message))}"
    assert set(message["attributes"]) == {"content_type", "workflow_id", "execution_id"}


def test_await_callback_with_timeout_and_timeout_handling(workflow: dict[str, Any]) -> None:
    step = find_step(workflow, "wait_for_callback")
    assert step["try"]["call"] == "events.await_callback"
    assert step["try"]["args"] == {"callback": "${callback}", "timeout": "${timeout}"}
    assert step["except"]["as"] == "e"
    branch = step["except"]["steps"][0]["timeout_or_rethrow"]["switch"][0]
    assert branch["condition"] == '${"TimeoutError" in e.tags}'
    assert branch["raise"]["tags"] == ["CallbackTimeout", "TimeoutError"]
    assert "message" in branch["raise"]
    # Anything that is not a timeout is re-raised unchanged.
    assert step["except"]["steps"][1] == {"rethrow": {"raise": "${e}"}}


def test_error_body_raises_a_tagged_callback_error(workflow: dict[str, Any]) -> None:
    inspect = find_step(workflow, "inspect_body")["assign"]
    assert {"failure": '${map.get(body, "error")}'} in inspect
    (branch,) = find_step(workflow, "fail_on_error_body")["switch"]
    assert branch["condition"] == "${failure != null}"
    assert branch["raise"]["tags"] == ["CallbackError"]
    assert set(branch["raise"]) == {"tags", "code", "message", "details", "callback_url"}


def test_result_returns_body_and_arrival_time(workflow: dict[str, Any]) -> None:
    result = find_step(workflow, "result")["return"]
    assert result["body"] == "${body}"
    assert result["received_at"] == "${time.format(arrived)}"


def test_main_turns_a_timeout_into_a_clear_result(workflow: dict[str, Any]) -> None:
    handler = find_step(workflow, "wait_for_relay", block="main")["except"]
    (branch,) = handler["steps"][0]["classify"]["switch"]
    assert branch["condition"] == '${"CallbackTimeout" in e.tags}'
    assert branch["return"]["status"] == "TIMED_OUT"
    assert handler["steps"][1] == {"fail": {"raise": "${e}"}}


def test_every_raised_map_has_tags(workflow: dict[str, Any]) -> None:
    for block in workflow.values():
        for name, body in iter_steps(block["steps"]):
            raised = body.get("raise")
            if isinstance(raised, dict):
                assert isinstance(raised.get("tags"), list), name


def test_step_names_are_unique_per_block(workflow: dict[str, Any]) -> None:
    for block_name, block in workflow.items():
        names = [
            name
            for name, body in iter_steps(block["steps"])
            if any(k in body for k in ("call", "assign", "switch", "try", "raise", "return"))
        ]
        assert len(names) == len(set(names)), block_name


def test_every_call_is_known(workflow: dict[str, Any]) -> None:
    known = KNOWN_CALLS | set(workflow) - {"main"}
    for block in workflow.values():
        for name, body in iter_steps(block["steps"]):
            if "call" in body:
                assert body["call"] in known, f"{name} calls {body['call']}"


def test_every_expression_is_balanced(workflow: dict[str, Any]) -> None:
    for expression in all_expressions(workflow):
        assert expression.startswith("${"), expression
        assert expression.endswith("}"), expression
        inner = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression[2:-1])
        assert inner.count('"') % 2 == 0, expression
        for opening, closing in ("()", "[]", "{}"):
            assert inner.count(opening) == inner.count(closing), expression


# -- configuration ------------------------------------------------------------


def test_topic_comes_from_relay_topic_env_with_input_override(workflow: dict[str, Any]) -> None:
    assign = find_step(workflow, "read_arguments", block="main")["assign"]
    assert {
        "topic": '${default(map.get(args, "topic"), '
        'sys.get_env("RELAY_TOPIC", "workflows-callback-relay"))}'
    } in assign


def test_project_comes_from_google_cloud_project_id(workflow: dict[str, Any]) -> None:
    branches = find_step(workflow, "resolve_topic")["switch"]
    assert 'sys.get_env("GOOGLE_CLOUD_PROJECT_ID")' in branches[1]["assign"][0]["topic_name"]


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("relay", "projects/my-project/topics/relay"),
        ("projects/other/topics/relay-2", "projects/other/topics/relay-2"),
    ],
)
def test_topic_override_accepts_id_or_full_name(
    definition: WorkflowDefinition, topic: str, expected: str
) -> None:
    run = publish_once(
        definition, {"payload": {}, "timeout": 60, "topic": topic}, project="my-project"
    )
    assert run.published.topic == expected


def test_names_agree_with_deploy_sh() -> None:
    if not DEPLOY_SH.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("deploy.sh is missing, and CI=true requires this test to run")
        pytest.skip("deploy.sh is not in the repository yet")
    text = DEPLOY_SH.read_text(encoding="utf-8")
    assert "RELAY_TOPIC=" in text, "deploy.sh must set RELAY_TOPIC with --set-env-vars"
    assert "workflows-callback-relay" in text
    assert "workflow.yaml" in text
    assert "callback-relay-demo" in text


# -- the published message ----------------------------------------------------


def test_published_message_matches_schema_and_relay(
    definition: WorkflowDefinition, validator: jsonschema.Draft202012Validator
) -> None:
    run = publish_once(
        definition,
        {"payload": {"order": 42, "status": "shipped"}, "timeout": 3600},
    )
    published = run.published

    assert published.topic == "projects/p/topics/workflows-callback-relay"
    assert published.message == {
        "callback_url": CALLBACK_URL,
        "payload": {"order": 42, "status": "shipped"},
        "method": "POST",
        "expires_at": "2024-07-12T13:50:33.250000Z",
    }
    validator.validate(json.loads(published.data))
    parsed = parse_message_data(published.data, max_bytes=65536)
    assert parsed.callback_url == CALLBACK_URL
    assert json.loads(parsed.body or b"") == {"order": 42, "status": "shipped"}
    assert parsed.expires_at is not None
    assert parsed.expires_at.timestamp() == pytest.approx(NOW + 3600)
    assert published.attributes == {
        "content_type": "application/json",
        "workflow_id": "callback-relay-demo",
        "execution_id": "e-1",
    }
    # Nobody called back: main reports the timeout as its result, with the same expiry.
    assert run.result["status"] == "TIMED_OUT"
    assert run.result["expires_at"] == published.message["expires_at"]


def test_message_keys_are_schema_properties(
    workflow: dict[str, Any], definition: WorkflowDefinition
) -> None:
    (message_assign,) = [
        a for a in find_step(workflow, "build_message")["assign"] if "message" in a
    ]
    keys = set(message_assign["message"])
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert keys <= set(schema["properties"])
    assert set(schema["required"]) <= keys
    # And what the executed workflow publishes has exactly those keys.
    assert set(publish_once(definition, {"topic": "t"}).published.message) == keys


def test_the_subworkflow_s_timeout_error_names_the_message_and_its_expiry(
    definition: WorkflowDefinition,
) -> None:
    run = publish_once(definition, {"topic": "t", "timeout": 90}, entry=SUBWORKFLOW)

    published = run.published
    assert run.error == {
        "tags": ["CallbackTimeout", "TimeoutError"],
        "message": "no callback within 90 s on projects/p/topics/t",
        "callback_url": CALLBACK_URL,
        "message_id": published.message_id,
        "expires_at": published.message["expires_at"],
    }
    assert published.message["expires_at"] == "2024-07-12T12:52:03.250000Z"  # NOW + 90 s


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(
    payload=json_values,
    timeout=st.integers(min_value=1, max_value=31_536_000),
    method=st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
)
def test_any_payload_and_timeout_give_a_valid_message(
    definition: WorkflowDefinition,
    validator: jsonschema.Draft202012Validator,
    payload: Any,
    timeout: int,
    method: str,
) -> None:
    # main always waits on POST: run the subworkflow itself for the other methods.
    run = publish_once(
        definition,
        {"topic": "t", "payload": payload, "timeout": timeout, "method": method},
        entry=SUBWORKFLOW,
    )
    assert run.error is not None
    assert run.error["tags"] == ["CallbackTimeout", "TimeoutError"]
    published = run.published
    validator.validate(json.loads(published.data))
    parsed = parse_message_data(published.data, max_bytes=1 << 20)
    assert parsed.method == method
    assert json.loads(parsed.body or b"null") == payload


# -- the docs' copy of the subworkflow ------------------------------------------


def test_readme_subworkflow_is_the_one_in_workflow_yaml(workflow: dict[str, Any]) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", WORKFLOW_DOC.read_text(encoding="utf-8"), re.S)
    copies = [yaml.safe_load(b) for b in blocks if b.lstrip().startswith("await_via_pubsub:")]
    assert copies, "docs/workflow.md shows no await_via_pubsub block"
    assert copies[0]["await_via_pubsub"] == workflow["await_via_pubsub"]


# -- what the subworkflow hands back never carries the callback's headers -------


def _expressions(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _expressions(value)]
    if isinstance(node, list):
        return [text for value in node for text in _expressions(value)]
    return []


def test_subworkflow_never_returns_or_logs_the_callback_request_headers(
    workflow: dict[str, Any],
) -> None:
    # The relay's Authorization header arrives in http_request.headers: returning
    # or logging the request (or its headers) would copy the token into execution
    # results and Cloud Logging.
    outputs: list[str] = []
    for _name, body in iter_steps(workflow["await_via_pubsub"]["steps"]):
        if "return" in body:
            outputs += _expressions(body["return"])
        if body.get("call") == "sys.log":
            outputs += _expressions(body.get("args"))
    assert outputs, "found no return or sys.log step"
    whole_request = re.compile(r"callback_request(\.http_request)?\s*\}")
    for text in outputs:
        assert "headers" not in text, text
        assert not whole_request.search(text), text
