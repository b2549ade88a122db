"""The local Workflows interpreter, against Google's documented examples and workflow.yaml.

Expected values come from the reference pages cited next to each test (examples
and "Raised exceptions" tables). The workflow.yaml tests run the real file, both
halves (publish and resume), against small in-memory bindings.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from callback_relay.message import parse_message_data
from harness.workflow_interpreter import (
    Bindings,
    ExecutionFailed,
    LogEntry,
    UnsupportedConstruct,
    WorkflowDefinitionError,
    WorkflowError,
    builtin_environment,
    error_map,
    load_workflow,
    run_workflow,
)

WORKFLOW_YAML = Path(__file__).resolve().parents[2] / "workflow.yaml"
CALLBACK_URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/local-project/locations/us-central1"
    "/workflows/callback-relay-demo/executions/e-1/callbacks/c-1"
)


def unused(*_: Any) -> Any:
    raise AssertionError("this binding must not be called")


def bindings(**overrides: Any) -> Bindings:
    values: dict[str, Any] = {
        "create_callback_endpoint": unused,
        "await_callback": unused,
        "publish": unused,
        "environment": builtin_environment(
            project_id="local-project", workflow_id="w", execution_id="e-1"
        ),
        "now": lambda: 1_720_788_633.0,
    }
    values.update(overrides)
    return Bindings(**values)


def run(definition: Any, arguments: Any = None, **overrides: Any) -> Any:
    return run_workflow(definition, arguments, bindings=bindings(**overrides))


def expr(source: str, **variables: Any) -> Any:
    """Evaluate one expression, after assigning `variables` in a first step."""
    steps: list[dict[str, Any]] = []
    if variables:
        steps.append({"init": {"assign": [{k: v} for k, v in variables.items()]}})
    steps.append({"done": {"return": "${" + source + "}"}})
    return run(steps)


def error_of(source: str, **variables: Any) -> Any:
    with pytest.raises(ExecutionFailed) as failed:
        expr(source, **variables)
    return failed.value.error


def tag_of(source: str, **variables: Any) -> str:
    error = error_of(source, **variables)
    assert isinstance(error, dict), error
    assert isinstance(error["message"], str)
    (tag,) = error["tags"]
    return str(tag)


# --- expressions and operators ---
# https://cloud.google.com/workflows/docs/reference/syntax/expressions
# https://cloud.google.com/workflows/docs/reference/syntax/datatypes


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),  # * binds tighter than +
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),  # / is float division
        ("7 // 2", 3),  # floor division
        ("7 % 3", 1),
        ("-2 * 3", -6),
        ('"hello " + "world"', "hello world"),
        ("1 + 2 < 4", True),  # + binds tighter than comparison
        ('2 == 2 and "a" != "b"', True),
        ("false or 1 > 2", False),
        ("TRUE AND NOT FALSE", True),  # keywords may be upper case
        ("not true == false", True),  # `not` binds tighter than `==`
        ('"b" in ["a", "b"]', True),
        ('"k" in {"k": 1}', True),
        ('"z" in {"k": 1}', False),
        ("1 == 1.0", True),
        ("true == 1", False),
        ("null == null", True),
        ('[1, {"a": [2]}] == [1, {"a": [2]}]', True),
        ('{"a": 1}["a"] + [10, 20][1]', 21),
    ],
)
def test_operators_and_precedence(source: str, expected: Any) -> None:
    result = expr(source)
    assert result == expected
    assert type(result) is type(expected)


def test_integer_and_double_keep_their_types() -> None:
    assert type(expr("4 / 2")) is float
    assert type(expr("1 + 2.0")) is float
    assert type(expr("3 * 4")) is int


@pytest.mark.parametrize(
    ("source", "tag"),
    [
        ('"count: " + 1', "TypeError"),  # no implicit conversion: use string()
        ('"k" in null', "TypeError"),  # `in` on null
        ('"k" in "kite"', "TypeError"),  # `in` takes a list or a map
        ("1 and true", "TypeError"),  # logical operators take booleans only
        ("not 1", "TypeError"),
        ('"a" < 1', "TypeError"),
        ("-true", "TypeError"),
        ("1 / 0", "ZeroDivisionError"),
        ("1 % 0", "ZeroDivisionError"),
        ("[1, 2][2]", "IndexError"),
        ('[1, 2]["0"]', "TypeError"),
        ('{"a": 1}.b', "KeyError"),
        ("undefined_variable", "KeyError"),
    ],
)
def test_operator_errors_are_tagged_error_maps(source: str, tag: str) -> None:
    assert tag_of(source) == tag


def test_yaml_maps_and_lists_holding_expressions_are_evaluated() -> None:
    # Dynamic keys, from https://cloud.google.com/workflows/docs/reference/syntax/maps
    steps = [
        {"createMap": {"assign": [{"dynamicKey": "myKey"}, {"n": 2}]}},
        {
            "done": {
                "return": {
                    "${dynamicKey}": "myValue",
                    '${dynamicKey + "Apple"}': "myValue",
                    "list": ["${n * 2}", {"nested": "${n + 1}"}],
                    "literal": "not ${an expression} unless the whole string is",
                }
            }
        },
    ]
    assert run(steps) == {
        "myKey": "myValue",
        "myKeyApple": "myValue",
        "list": [4, {"nested": 3}],
        "literal": "not ${an expression} unless the whole string is",
    }


def test_assign_into_map_fields_and_list_items() -> None:
    steps = [
        {"init": {"assign": [{"m": {"a": {"b": 1}}}, {"l": [1, 2]}]}},
        {"update": {"assign": [{"m.a.b": 5}, {'m["c"]': "${m.a.b + 1}"}, {"l[1]": 9}]}},
        {"done": {"return": ["${m}", "${l}"]}},
    ]
    assert run(steps) == [{"a": {"b": 5}, "c": 6}, [1, 9]]


# --- standard library: documented examples and raised exceptions ---


def test_map_get_documented_example_and_nested_keys() -> None:
    # https://cloud.google.com/workflows/docs/reference/stdlib/map/get
    my_map = {"key1": "hello", "key2": "world"}
    assert expr('map.get(my_map, "key2")', my_map=my_map) == "world"
    nested = {"key1": {"key2": "deep"}}
    assert expr('map.get(m, ["key1", "key2"])', m=nested) == "deep"
    assert expr('map.get(m, ["key1", "missing", "x"])', m=nested) is None
    assert expr('map.get(m, "missing")', m=nested) is None
    assert expr('map.get("not a map", "key")') is None
    assert expr('map.get(null, "key")') is None


def test_map_get_raises_type_error_for_a_key_that_is_not_a_string() -> None:
    assert tag_of("map.get(m, 1)", m={"1": "x"}) == "TypeError"
    assert tag_of('map.get(m, ["a", 2])', m={}) == "TypeError"


def test_default_with_map_get() -> None:
    # https://cloud.google.com/workflows/docs/reference/stdlib/expression-helpers
    assert expr('default(map.get(m, "absent"), "fallback")', m={}) == "fallback"
    assert expr('default(map.get(m, "present"), "fallback")', m={"present": 0}) == 0
    assert expr('default(null, {"a": 1})') == {"a": 1}


def test_conversion_and_data_type_helpers() -> None:
    # https://cloud.google.com/workflows/docs/reference/stdlib/expression-helpers
    assert expr('int("42")') == 42
    assert expr("int(2.7)") == 2
    assert expr('double("2.5")') == 2.5
    assert expr("double(2)") == 2.0
    assert expr("string(5)") == "5"
    assert expr("string(true)") == "true"
    assert expr("len([1, 2, 3])") == 3
    assert expr('len({"a": 1})') == 1
    assert expr('len("héllo")') == 5
    assert expr('keys({"a": 1, "b": 2})') == ["a", "b"]
    assert tag_of('int("forty-two")') == "ValueError"
    assert tag_of("len(5)") == "TypeError"
    assert tag_of("keys([1])") == "TypeError"
    assert tag_of("string(null)") == "TypeError"


def test_time_format_documented_examples() -> None:
    # https://cloud.google.com/workflows/docs/reference/stdlib/time/format
    assert expr("time.format(1720788633)") == "2024-07-12T12:50:33.000000Z"
    assert expr('time.format(1720788633, "GMT")') == "2024-07-12T12:50:33.000000Z"
    assert expr('time.format(1720788633, "Europe/Paris")') == "2024-07-12T14:50:33.000000+02:00"
    assert expr("time.format(sys.now())") == "2024-07-12T12:50:33.000000Z"


def test_time_format_raises_type_error_for_a_wrong_argument_type() -> None:
    assert tag_of('time.format("1720788633")') == "TypeError"
    assert tag_of('time.format(0, "Not/A_Zone")') == "ValueError"


def test_sys_get_env_documented_example_and_type_errors() -> None:
    # https://cloud.google.com/workflows/docs/reference/stdlib/sys/get_env
    assert expr('sys.get_env("GOOGLE_CLOUD_LOCATION")') == "us-central1"
    assert expr('sys.get_env("GOOGLE_CLOUD_PROJECT_ID")') == "local-project"
    assert expr('sys.get_env("UNSET_VARIABLE")') is None
    assert expr('sys.get_env("UNSET_VARIABLE", "fallback")') == "fallback"
    # "TypeError: If either name or default is not a string."
    assert tag_of("sys.get_env(42)") == "TypeError"
    assert tag_of('sys.get_env("UNSET_VARIABLE", 1)') == "TypeError"


def test_builtin_environment_has_the_seven_documented_variables() -> None:
    # https://cloud.google.com/workflows/docs/reference/environment-variables
    environment = builtin_environment(project_id="p", workflow_id="w", execution_id="e")
    assert sorted(environment) == [
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_CLOUD_PROJECT_ID",
        "GOOGLE_CLOUD_PROJECT_NUMBER",
        "GOOGLE_CLOUD_SERVICE_ACCOUNT_NAME",
        "GOOGLE_CLOUD_WORKFLOW_EXECUTION_ID",
        "GOOGLE_CLOUD_WORKFLOW_ID",
        "GOOGLE_CLOUD_WORKFLOW_REVISION_ID",
    ]


def test_json_encode_then_base64_documented_example() -> None:
    # https://cloud.google.com/workflows/docs/reference/stdlib/json/encode
    encoded = expr("base64.encode(json.encode(message))", message={"hello": "world"})
    assert json.loads(base64.b64decode(encoded)) == {"hello": "world"}
    assert expr("json.encode_to_string([1, true, null])") == "[1,true,null]"
    assert expr('json.decode("{\\"a\\": [1, 2]}")') == {"a": [1, 2]}
    assert expr("json.decode(json.encode(m))", m={"x": {"y": [1, "z"]}}) == {"x": {"y": [1, "z"]}}
    assert (
        expr("json.encode_to_string(m, true)", m={"a": [1]}) == '{\n    "a": [\n        1\n    ]\n}'
    )
    assert expr("base64.decode(base64.encode(json.encode(1)))") == b"1"


def test_json_and_base64_raise_the_documented_errors() -> None:
    # json.encode: "ValueError: If the input contains types that cannot be JSON-encoded".
    assert tag_of('json.encode({"b": json.encode(1)})') == "ValueError"
    assert tag_of('json.decode("{not json")') == "ValueError"
    assert tag_of("json.decode(1)") == "TypeError"
    assert tag_of('base64.encode("text, not bytes")') == "TypeError"
    assert tag_of('base64.decode("%%%")') == "ValueError"


def test_text_match_regex() -> None:
    # https://cloud.google.com/workflows/docs/reference/stdlib/text/match_regex
    assert expr('text.match_regex("projects/p/topics/t", "^projects/[^/]+/topics/[^/]+$")')
    assert not expr('text.match_regex("my-topic", "^projects/[^/]+/topics/[^/]+$")')
    assert tag_of('text.match_regex(1, "x")') == "TypeError"
    assert tag_of('text.match_regex("x", "(")') == "ValueError"


def test_sys_log_writes_one_entry_and_checks_its_arguments() -> None:
    # https://cloud.google.com/workflows/docs/reference/stdlib/sys/log
    entries: list[LogEntry] = []
    steps = [
        {"as_json": {"call": "sys.log", "args": {"severity": "INFO", "json": {"a": 1}}}},
        {"as_text": {"call": "sys.log", "args": {"text": "hello"}}},
        {"data_map": {"call": "sys.log", "args": {"data": {"m": 1}, "severity": "ERROR"}}},
        {"listed": {"call": "sys.log", "args": [None, "ERROR", "positional text"]}},
    ]
    run(steps, log=entries.append)
    assert entries == [
        LogEntry("INFO", "json", {"a": 1}),
        LogEntry("DEFAULT", "text", "hello"),
        LogEntry("ERROR", "json", {"m": 1}),
        LogEntry("ERROR", "text", "positional text"),
    ]
    # "TypeError: If more than one of data, text, or json are specified."
    both = [{"log": {"call": "sys.log", "args": {"text": "a", "json": {"b": 1}}}}]
    with pytest.raises(ExecutionFailed) as failed:
        run(both, log=entries.append)
    assert failed.value.tags == ["TypeError"]


# --- steps and control flow ---


def test_switch_next_and_end() -> None:
    # https://cloud.google.com/workflows/docs/reference/syntax/conditions and .../jumps
    definition = """
main:
  params: [args]
  steps:
    - first:
        switch:
          - condition: ${args.n < 0}
            next: negative
          - condition: ${args.n == 0}
            assign:
              - kind: "zero"
            next: finish
          - condition: true
            steps:
              - positive:
                  assign:
                    - kind: "positive"
        next: finish
    - negative:
        assign:
          - kind: "negative"
    - stop_early:
        switch:
          - condition: ${args.n < -10}
            next: end
    - finish:
        return: ${kind}
"""
    assert run(definition, {"n": -1}) == "negative"
    assert run(definition, {"n": 0}) == "zero"
    assert run(definition, {"n": 3}) == "positive"
    assert run(definition, {"n": -11}) is None  # next: end returns null


def test_a_condition_must_be_a_boolean() -> None:
    steps = [{"check": {"switch": [{"condition": "${1}", "return": "no"}]}}]
    with pytest.raises(ExecutionFailed) as failed:
        run(steps)
    assert failed.value.tags == ["TypeError"]


def test_subworkflow_parameters_with_defaults() -> None:
    # https://cloud.google.com/workflows/docs/reference/syntax/subworkflows
    definition = """
main:
  steps:
    - with_default:
        call: greet
        args:
          first_name: "Ada"
        result: short
    - with_both:
        call: greet
        args:
          first_name: "Grace"
          last_name: "Hopper"
        result: long
    - done:
        return: ${[short, long]}
greet:
  params: [first_name, last_name: "Lovelace"]
  steps:
    - build:
        return: ${"Hello " + first_name + " " + last_name}
"""
    assert run(definition) == ["Hello Ada Lovelace", "Hello Grace Hopper"]


@pytest.mark.parametrize("args", ['{"last_name": "x"}', '{"first_name": "x", "middle": "y"}'])
def test_missing_or_unknown_subworkflow_arguments_fail_to_load(args: str) -> None:
    definition = f"""
main:
  steps:
    - call_it:
        call: greet
        args: {args}
greet:
  params: [first_name, last_name: "Lovelace"]
  steps:
    - done:
        return: ${{first_name}}
"""
    with pytest.raises(WorkflowDefinitionError, match="call_it"):
        load_workflow(definition)


def test_catching_errors_by_tag_documented_example() -> None:
    # https://cloud.google.com/workflows/docs/reference/syntax/error-types
    # documents ${'SystemError' in e.tags} as the way to test a tag.
    definition = """
- fail:
    try:
      raise:
        tags: ["SystemError"]
        message: "an error has occurred"
    except:
      as: e
      steps:
        - check:
            return: ${[('SystemError' in e.tags), e.message]}
"""
    assert run(definition) == [True, "an error has occurred"]


def test_raise_a_string_and_catch_a_builtin_error() -> None:
    # https://cloud.google.com/workflows/docs/reference/syntax/raising-errors
    # Variables assigned in `except` are local unless created before the block.
    definition = """
- share:
    assign:
      - caught: null
      - tags: null
- raise_string:
    try:
      raise: "Something went wrong."
    except:
      as: e
      steps:
        - keep:
            assign:
              - caught: ${e}
- builtin:
    try:
      assign:
        - x: ${1 / 0}
    except:
      as: e
      steps:
        - keep_tags:
            assign:
              - tags: ${e.tags}
- done:
    return: ${[caught, tags]}
"""
    assert run(definition) == ["Something went wrong.", ["ZeroDivisionError"]]


def test_uncaught_raise_fails_the_execution_with_the_raised_map() -> None:
    with pytest.raises(ExecutionFailed) as failed:
        run([{"boom": {"raise": {"code": 55, "message": "custom"}}}])
    assert failed.value.error == {"code": 55, "message": "custom"}


def test_except_block_variables_are_local_but_outer_ones_are_shared() -> None:
    # https://cloud.google.com/workflows/docs/reference/syntax/catching-errors#variable-scope
    definition = """
- before:
    assign:
      - shared: "unset"
- fail:
    try:
      raise: "x"
    except:
      as: e
      steps:
        - inside:
            assign:
              - shared: "set in except"
              - local_only: 1
- check:
    try:
      return: ${local_only}
    except:
      as: e
      steps:
        - report:
            return: ${[shared, e.tags]}
"""
    assert run(definition) == ["set in except", ["KeyError"]]


def test_await_callback_timeout_raises_a_catchable_timeout_error() -> None:
    # https://cloud.google.com/workflows/docs/reference/stdlib/events/await_callback
    definition = """
- create:
    call: events.create_callback_endpoint
    args:
      http_callback_method: "GET"
    result: callback
- wait:
    try:
      call: events.await_callback
      args:
        callback: ${callback}
        timeout: 5
      result: request
    except:
      as: e
      steps:
        - timed_out:
            return: ${"TimeoutError" in e.tags}
"""
    waited: list[tuple[Any, float]] = []

    def await_callback(callback: Any, timeout: float) -> None:
        waited.append((callback, timeout))
        return None

    result = run(
        definition,
        create_callback_endpoint=lambda method: {"url": f"{CALLBACK_URL}?{method}"},
        await_callback=await_callback,
    )
    assert result is True
    assert waited == [({"url": f"{CALLBACK_URL}?GET"}, 5.0)]


# --- loud failure outside the subset ---


@pytest.mark.parametrize(
    ("step", "construct"),
    [
        ({"for": {"value": "v", "in": [1], "steps": [{"s": {"return": 1}}]}}, "'for'"),
        ({"parallel": {"branches": []}}, "'parallel'"),
        ({"try": {"call": "sys.now"}, "retry": "${http.default_retry}"}, "'retry'"),
        ({"call": "http.get", "args": {"url": "https://example.com"}}, "'http.get'"),
        ({"assign": [{"x": '${text.split("a,b", ",")}'}]}, "text.split()"),
        ({"assign": [{"x": '${sys.log("in an expression")}'}]}, "sys.log() in an expression"),
        ({"assign": [{"x": '${"a" not in ["b"]}'}]}, "'not in'"),
        ({"assign": [{"l[list.length(l)]": 1}]}, "list.length()"),
        ({"next": "continue"}, "'next: continue'"),
        ({"switch": [{"condition": True, "call": "sys.now"}]}, "'call' in a switch branch"),
        ({"unknown_key": 1}, "'unknown_key'"),
    ],
)
def test_constructs_outside_the_subset_fail_loudly_before_running(
    step: dict[str, Any], construct: str
) -> None:
    definition = [{"the_step": step}, {"done": {"return": 1}}]
    with pytest.raises(UnsupportedConstruct) as refused:
        run(definition)
    assert "main/the_step" in str(refused.value)
    assert construct in str(refused.value)


def test_a_bad_expression_or_jump_fails_to_load() -> None:
    with pytest.raises(WorkflowDefinitionError, match="expected"):
        load_workflow([{"s": {"return": "${(1 + 2}"}}])
    with pytest.raises(WorkflowDefinitionError, match="names no step"):
        load_workflow([{"s": {"next": "nowhere"}}])
    with pytest.raises(WorkflowDefinitionError, match="unexpected 'And'"):
        load_workflow([{"s": {"return": "${true And false}"}}])


# --- workflow.yaml, executed ---


class FakeCloud:
    """In-memory callbacks and Pub/Sub: the 'relay' answers with a chosen body."""

    def __init__(self, body: Any = None, *, respond: bool = True) -> None:
        self.body = body
        self.respond = respond
        self.times: Iterator[float] = iter([1_720_788_633.25, 1_720_788_635.75])
        self.published: list[tuple[str, Mapping[str, Any]]] = []
        self.created: list[str] = []
        self.awaited: list[tuple[Mapping[str, Any], float]] = []
        self.logs: list[LogEntry] = []

    def create_callback_endpoint(self, method: str) -> dict[str, Any]:
        self.created.append(method)
        return {"url": CALLBACK_URL}

    def publish(self, topic: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.published.append((topic, body))
        return {"messageIds": [f"m-{len(self.published)}"]}

    def message(self) -> dict[str, Any]:
        (_, body) = self.published[-1]
        decoded: dict[str, Any] = json.loads(base64.b64decode(body["messages"][0]["data"]))
        return decoded

    def await_callback(self, callback: Mapping[str, Any], timeout: float) -> dict[str, Any] | None:
        self.awaited.append((callback, timeout))
        if not self.respond:
            return None
        # By default the relay posts the published payload back as the body.
        body = self.message()["payload"] if self.body is None else self.body
        return {
            "http_request": {
                "body": body,
                "headers": {"content-type": "application/json", "authorization": "Bearer t"},
                "method": "POST",
                "query": {},
                "url": CALLBACK_URL.split("googleapis.com", 1)[1],
            },
            "received_time": "2024-07-12T12:50:35.750000Z",
            "type": "HTTP",
        }

    def bindings(self, **environment: str) -> Bindings:
        return Bindings(
            create_callback_endpoint=self.create_callback_endpoint,
            await_callback=self.await_callback,
            publish=self.publish,
            environment={
                **builtin_environment(
                    project_id="local-project",
                    workflow_id="callback-relay-demo",
                    execution_id="e-1",
                ),
                **environment,
            },
            now=lambda: next(self.times),
            log=self.logs.append,
        )

    def run(self, arguments: Any = None, **environment: str) -> Any:
        return run_workflow(WORKFLOW_YAML, arguments, bindings=self.bindings(**environment))


def test_workflow_yaml_loads_within_the_subset() -> None:
    definition = load_workflow(WORKFLOW_YAML)
    assert set(definition.subworkflows) == {"main", "await_via_pubsub", "await_event"}


def test_workflow_yaml_happy_path_returns_the_resumed_body() -> None:
    cloud = FakeCloud()
    payload = {"order": 7, "items": ["a", "b"]}
    result = cloud.run({"payload": payload, "timeout": 30, "topic": "my-topic"})
    assert result == {
        "status": "RESUMED",
        "body": payload,
        "received_at": "2024-07-12T12:50:35.750000Z",
        "waited_seconds": 2.5,
        "callback_url": CALLBACK_URL,
        "message_id": "m-1",
    }
    assert cloud.created == ["POST"]
    assert cloud.awaited == [({"url": CALLBACK_URL}, 30.0)]
    (topic, body) = cloud.published[0]
    assert topic == "projects/local-project/topics/my-topic"
    assert body["messages"][0]["attributes"] == {
        "content_type": "application/json",
        "workflow_id": "callback-relay-demo",
        "execution_id": "e-1",
    }
    assert cloud.message() == {
        "callback_url": CALLBACK_URL,
        "payload": payload,
        "method": "POST",
        "expires_at": "2024-07-12T12:51:03.250000Z",
    }
    assert [entry.payload["event"] for entry in cloud.logs] == [
        "callback_published",
        "callback_received",
    ]


def test_workflow_yaml_defaults_topic_from_env_and_payload() -> None:
    cloud = FakeCloud()
    result = cloud.run(None, RELAY_TOPIC="from-env")
    assert cloud.published[0][0] == "projects/local-project/topics/from-env"
    assert result["body"] == {"greeting": "hello from callback-relay-demo"}
    assert cloud.awaited[0][1] == 600.0
    FakeCloud().run({"topic": "projects/other/topics/full"})  # a full name passes through
    other = FakeCloud()
    other.run({"topic": "projects/other/topics/full"})
    assert other.published[0][0] == "projects/other/topics/full"
    default = FakeCloud()
    default.run({})
    assert default.published[0][0] == "projects/local-project/topics/workflows-callback-relay"


def test_workflow_yaml_error_body_fails_with_a_callback_error() -> None:
    error = {"code": "INVALID_ORDER", "message": "order 7 was refused", "details": {"id": 7}}
    cloud = FakeCloud(body={"error": error})
    with pytest.raises(ExecutionFailed) as failed:
        cloud.run({"payload": {"order": 7}, "topic": "t"})
    assert failed.value.error == {
        "tags": ["CallbackError"],
        "code": "INVALID_ORDER",
        "message": "order 7 was refused",
        "details": {"id": 7},
        "callback_url": CALLBACK_URL,
    }
    assert [entry.payload["event"] for entry in cloud.logs] == ["callback_published"]


def test_workflow_yaml_error_body_defaults_and_non_error_bodies() -> None:
    cloud = FakeCloud(body={"error": {}})
    with pytest.raises(ExecutionFailed) as failed:
        cloud.run({"topic": "t"})
    assert failed.value.error["code"] == "UNKNOWN"
    assert failed.value.error["message"] == "the producer reported an error"
    assert failed.value.error["details"] is None
    # Only a map holding a non-null "error" fails the step.
    for body in ({"error": None}, ["error"], "error", None, {"errors": 1}):
        result = FakeCloud(body=body if body is not None else {}).run({"topic": "t"})
        assert result["status"] == "RESUMED"


def test_workflow_yaml_timeout_is_a_result_not_a_failure() -> None:
    cloud = FakeCloud(respond=False)
    result = cloud.run({"timeout": 5, "topic": "my-topic"})
    assert result == {
        "status": "TIMED_OUT",
        "message": "no callback within 5 s on projects/local-project/topics/my-topic",
        "callback_url": CALLBACK_URL,
        "expires_at": "2024-07-12T12:50:38.250000Z",
    }


def test_workflow_yaml_rethrows_other_errors_from_await() -> None:
    cloud = FakeCloud()

    def refuse(callback: Any, timeout: float) -> None:
        raise WorkflowError({**error_map("HttpError", "callback API said 500"), "code": 500})

    run_bindings = cloud.bindings()
    run_bindings.await_callback = refuse
    with pytest.raises(ExecutionFailed) as failed:
        run_workflow(WORKFLOW_YAML, {"topic": "t"}, bindings=run_bindings)
    assert failed.value.error == {
        "message": "callback API said 500",
        "tags": ["HttpError"],
        "code": 500,
    }


@pytest.mark.parametrize(
    ("payload", "timeout", "topic", "expires_at"),
    [
        (
            {"greeting": "hé", "n": [1, 2.5, None, True]},
            600,
            "my-topic",
            "2024-07-12T13:00:33.250000Z",
        ),
        ("a string payload", 1, "projects/p2/topics/t2", "2024-07-12T12:50:34.250000Z"),
        ({}, 43200, "t", "2024-07-13T00:50:33.250000Z"),
    ],
)
def test_workflow_yaml_publishes_compact_utf8_json_the_relay_accepts(
    payload: Any, timeout: int, topic: str, expires_at: str
) -> None:
    cloud = FakeCloud()
    cloud.run({"payload": payload, "timeout": timeout, "topic": topic})
    expected = {
        "callback_url": CALLBACK_URL,
        "payload": payload,
        "method": "POST",
        "expires_at": expires_at,
    }
    (published_topic, body) = cloud.published[0]
    (message,) = body["messages"]
    data = base64.b64decode(message["data"])
    assert published_topic == (topic if "/" in topic else f"projects/local-project/topics/{topic}")
    # json.encode: compact, UTF-8, keys in the order the map was built.
    assert data == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    assert message["attributes"] == {
        "content_type": "application/json",
        "workflow_id": "callback-relay-demo",
        "execution_id": "e-1",
    }
    parsed = parse_message_data(data, max_bytes=65536)
    assert parsed.callback_url == CALLBACK_URL
    assert json.loads(parsed.body or b"null") == payload


def test_the_subworkflow_runs_on_its_own_with_its_defaults() -> None:
    cloud = FakeCloud()
    result = run_workflow(
        WORKFLOW_YAML,
        {"topic": "t", "payload": {"x": 1}},
        bindings=cloud.bindings(),
        entry="await_via_pubsub",
    )
    assert result["body"] == {"x": 1}
    assert (result["method"], result["query"]) == ("POST", {})
    assert cloud.awaited[0][1] == 43200.0  # the await_callback default
    # The callback request's headers (the relay's token among them) are never returned.
    assert "headers" not in json.dumps(result)
    assert "Bearer" not in json.dumps(result)
