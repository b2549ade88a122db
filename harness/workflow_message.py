"""The message workflow.yaml publishes, rebuilt in Python from workflow.yaml itself.

No Workflows emulator runs locally, so the demo driver and the end-to-end tests
play the workflow's part. To publish *exactly* what the workflow would, they read
the `build_message` and `publish` steps of the `await_via_pubsub` subworkflow and
evaluate their expressions with a small evaluator that knows only the handful of
Workflows functions those steps use. An expression it does not understand is an
error, so a change to workflow.yaml cannot silently drift from what is tested.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

WORKFLOW_PATH = Path(__file__).resolve().parent.parent / "workflow.yaml"
SUBWORKFLOW = "await_via_pubsub"
PUBLISH_CONNECTOR = "googleapis.pubsub.v1.projects.topics.publish"


class UnsupportedExpression(ValueError):
    """workflow.yaml uses an expression this evaluator does not know."""


def load_workflow(path: Path = WORKFLOW_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return loaded


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


def workflows_time_format(seconds: float) -> str:
    """time.format(seconds) with no timezone: UTC, microseconds, 'Z' (the documented form)."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def workflows_json_encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def workflows_base64_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_TOKEN_RE = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<string>\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"|(?P<op>[()+,\[\]]))"
)


class _Parser:
    """Recursive descent over: literal | name(.name)* ([int])* | func(args) | a + b."""

    def __init__(
        self, text: str, env: Mapping[str, Any], funcs: Mapping[str, Callable[..., Any]]
    ) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            match = _TOKEN_RE.match(text, pos)
            if not match or match.end() == pos:
                raise UnsupportedExpression(f"cannot read {text[pos:]!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
        self.index = 0
        self.env = env
        self.funcs = funcs

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise UnsupportedExpression(f"expected {value!r}, found {token!r}")
        self.index += 1
        return token

    def parse(self) -> Any:
        value = self.sum()
        if self.peek() is not None:
            raise UnsupportedExpression(f"unexpected {self.peek()!r}")
        return value

    def sum(self) -> Any:
        value = self.term()
        while self.peek() == ("op", "+"):
            self.take("+")
            value = value + self.term()
        return value

    def term(self) -> Any:
        kind, text = self.take()
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "string":
            return json.loads(text)
        if kind == "name":
            if self.peek() == ("op", "("):
                return self.call(text)
            return self.index_into(self.lookup(text))
        if text == "(":
            value = self.sum()
            self.take(")")
            return value
        raise UnsupportedExpression(f"unexpected {text!r}")

    def call(self, name: str) -> Any:
        if name not in self.funcs:
            raise UnsupportedExpression(f"function {name} is not supported")
        self.take("(")
        args: list[Any] = []
        while self.peek() != ("op", ")"):
            args.append(self.sum())
            if self.peek() == ("op", ","):
                self.take(",")
        self.take(")")
        return self.funcs[name](*args)

    def lookup(self, dotted: str) -> Any:
        head, *rest = dotted.split(".")
        if head not in self.env:
            raise UnsupportedExpression(f"variable {head} is not defined")
        value = self.env[head]
        for key in rest:
            value = value[key]
        return value

    def index_into(self, value: Any) -> Any:
        while self.peek() == ("op", "["):
            self.take("[")
            value = value[self.sum()]
            self.take("]")
        return value


def evaluate(value: Any, env: Mapping[str, Any], funcs: Mapping[str, Callable[..., Any]]) -> Any:
    """Evaluate a YAML value: "${...}" strings are expressions, maps and lists recurse."""
    if isinstance(value, str):
        if value.startswith("${") and value.endswith("}"):
            return _Parser(value[2:-1], env, funcs).parse()
        return value
    if isinstance(value, dict):
        return {key: evaluate(item, env, funcs) for key, item in value.items()}
    if isinstance(value, list):
        return [evaluate(item, env, funcs) for item in value]
    return value


def _assign(
    assignments: list[dict[str, Any]], env: dict[str, Any], funcs: Mapping[str, Callable[..., Any]]
) -> None:
    for assignment in assignments:
        ((name, expression),) = assignment.items()
        env[name] = evaluate(expression, env, funcs)


@dataclasses.dataclass(frozen=True)
class PublishedMessage:
    """What the workflow hands to the Pub/Sub connector, decoded."""

    topic: str
    message: dict[str, Any]
    data: bytes
    attributes: dict[str, str]


def build_published_message(
    *,
    callback_url: str,
    payload: Any,
    timeout: float,
    now: float,
    topic: str,
    method: str = "POST",
    project: str = "local-project",
    workflow_id: str = "callback-relay-demo",
    execution_id: str = "local-execution",
    workflow: Mapping[str, Any] | None = None,
) -> PublishedMessage:
    """Evaluate workflow.yaml's build_message and publish steps for these inputs."""
    workflow = workflow if workflow is not None else load_workflow()
    environment = {
        "GOOGLE_CLOUD_PROJECT_ID": project,
        "GOOGLE_CLOUD_WORKFLOW_ID": workflow_id,
        "GOOGLE_CLOUD_WORKFLOW_EXECUTION_ID": execution_id,
    }

    def get_env(name: str, default: str | None = None) -> str | None:
        return environment.get(name, default)

    funcs: dict[str, Callable[..., Any]] = {
        "sys.now": lambda: now,
        "sys.get_env": get_env,
        "time.format": workflows_time_format,
        "json.encode": workflows_json_encode,
        "base64.encode": workflows_base64_encode,
        "string": str,
        "text.match_regex": lambda source, regexp: re.search(regexp, source) is not None,
    }
    env: dict[str, Any] = {
        "topic": topic,
        "payload": payload,
        "timeout": timeout,
        "method": method,
        "callback": {"url": callback_url},
    }
    for branch in find_step(workflow, "resolve_topic")["switch"]:
        if evaluate(branch["condition"], env, funcs) is True:
            _assign(branch["assign"], env, funcs)
            break
    _assign(find_step(workflow, "build_message")["assign"], env, funcs)
    publish = find_step(workflow, "publish")
    if publish.get("call") != PUBLISH_CONNECTOR:
        raise UnsupportedExpression(f"publish step calls {publish.get('call')!r}")
    args = evaluate(publish["args"], env, funcs)
    (entry,) = args["body"]["messages"]
    data = base64.b64decode(entry["data"])
    return PublishedMessage(
        topic=args["topic"],
        message=env["message"],
        data=data,
        attributes={str(k): str(v) for k, v in (entry.get("attributes") or {}).items()},
    )
