"""Load a workflow definition into typed steps, rejecting anything outside the subset.

Everything is checked here, before the first step runs, the way a deployment
would be: unknown step keys, `for`/`parallel`/`retry`, unknown functions or
subworkflows, unknown or missing subworkflow arguments, `next` targets that do
not exist, and expressions that do not parse.

Syntax: https://cloud.google.com/workflows/docs/reference/syntax
  steps and jumps   https://cloud.google.com/workflows/docs/reference/syntax/jumps
  conditions        https://cloud.google.com/workflows/docs/reference/syntax/conditions
  subworkflows      https://cloud.google.com/workflows/docs/reference/syntax/subworkflows
  try/except        https://cloud.google.com/workflows/docs/reference/syntax/catching-errors
  raise             https://cloud.google.com/workflows/docs/reference/syntax/raising-errors
  assign            https://cloud.google.com/workflows/docs/reference/syntax/variables
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from harness.workflow_interpreter.errors import UnsupportedConstruct, WorkflowDefinitionError
from harness.workflow_interpreter.evaluator import Template, compile_value, expression_source
from harness.workflow_interpreter.stdlib import FUNCTIONS
from harness.workflow_interpreter.syntax_tree import (
    Attribute,
    Call,
    Index,
    Name,
    Node,
    parse_expression,
    walk,
)

END = "end"
# Constructs of the language this interpreter deliberately leaves out.
_UNSUPPORTED_KEYS = {"for", "parallel", "retry", "break", "continue"}
_LOOP_JUMPS = {"break", "continue"}


@dataclasses.dataclass(frozen=True)
class Assignment:
    target: Node  # Name, or Name followed by .field / [index]
    value: Template


@dataclasses.dataclass(frozen=True)
class CallSpec:
    function: str
    args: Template | None
    result: str | None


@dataclasses.dataclass(frozen=True)
class Body:
    """What a step (or a switch branch, or a try block) does, in execution order."""

    assign: tuple[Assignment, ...] = ()
    call: CallSpec | None = None
    switch: tuple[Branch, ...] | None = None
    try_body: Body | None = None
    except_as: str | None = None
    except_steps: tuple[Step, ...] | None = None
    steps: tuple[Step, ...] | None = None
    raise_value: Template | None = None
    returns: Template | None = None
    has_return: bool = False
    next: str | None = None


@dataclasses.dataclass(frozen=True)
class Branch:
    condition: Template
    body: Body


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    where: str  # "subworkflow/step" for messages
    body: Body


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    required: bool
    default: Any = None


@dataclasses.dataclass(frozen=True)
class Subworkflow:
    name: str
    params: tuple[Param, ...]
    steps: tuple[Step, ...]


@dataclasses.dataclass(frozen=True)
class WorkflowDefinition:
    subworkflows: Mapping[str, Subworkflow]


def load_definition(document: Any) -> WorkflowDefinition:
    """From the parsed YAML/JSON document (a map of subworkflows, or a bare step list)."""
    if isinstance(document, list):
        document = {"main": {"steps": document}}
    if not isinstance(document, dict) or "main" not in document:
        raise WorkflowDefinitionError("a workflow is a list of steps or a map with a 'main' block")
    names = set(document)
    loader = _Loader(names)
    subworkflows = {
        str(name): loader.subworkflow(str(name), block) for name, block in document.items()
    }
    loader.check_calls(subworkflows)
    return WorkflowDefinition(subworkflows)


class _Loader:
    def __init__(self, subworkflow_names: set[str]) -> None:
        self.subworkflow_names = subworkflow_names
        self.pending_calls: list[tuple[str, str, set[str]]] = []

    def subworkflow(self, name: str, block: Any) -> Subworkflow:
        if not isinstance(block, dict) or not isinstance(block.get("steps"), list):
            raise WorkflowDefinitionError(f"{name}: a subworkflow needs a 'steps' list")
        extra = set(block) - {"params", "steps"}
        if extra:
            raise UnsupportedConstruct(name, f"subworkflow key(s) {sorted(extra)}")
        params = tuple(self.param(name, p) for p in block.get("params") or [])
        steps = self.steps(name, block["steps"])
        self.check_jumps(name, steps)
        return Subworkflow(name, params, steps)

    def param(self, where: str, item: Any) -> Param:
        if isinstance(item, str):
            return Param(item, required=True)
        if isinstance(item, dict) and len(item) == 1:
            ((name, default),) = item.items()
            if expression_source(default) is not None:
                raise UnsupportedConstruct(f"{where}: param {name}", "an expression as a default")
            return Param(str(name), required=False, default=default)
        raise WorkflowDefinitionError(f"{where}: bad parameter {item!r}")

    def steps(self, where: str, items: Any) -> tuple[Step, ...]:
        if not isinstance(items, list) or not items:
            raise WorkflowDefinitionError(f"{where}: 'steps' must be a non-empty list")
        result = []
        for item in items:
            if not isinstance(item, dict) or len(item) != 1:
                raise WorkflowDefinitionError(
                    f"{where}: each step is a map with one name: {item!r}"
                )
            ((name, body),) = item.items()
            step_where = f"{where.split('/')[0]}/{name}"
            if not isinstance(body, dict):
                raise WorkflowDefinitionError(f"{step_where}: a step's body must be a map")
            result.append(Step(str(name), step_where, self.body(step_where, body)))
        return tuple(result)

    def body(self, where: str, raw: dict[str, Any], *, branch: bool = False) -> Body:
        keys = set(raw)
        unsupported = sorted(keys & _UNSUPPORTED_KEYS)
        if unsupported:
            raise UnsupportedConstruct(where, f"'{unsupported[0]}'")
        allowed = {
            "assign",
            "call",
            "args",
            "result",
            "switch",
            "try",
            "except",
            "steps",
            "raise",
            "return",
            "next",
        }
        if branch:
            allowed = {"condition", "assign", "steps", "raise", "return", "next"}
        unknown = sorted(keys - allowed)
        if unknown:
            place = " in a switch branch" if branch else ""
            raise UnsupportedConstruct(where, f"the step key '{unknown[0]}'{place}")
        actions = keys & {"call", "switch", "try", "raise", "return", "steps"}
        if len(actions - ({"steps"} if branch else set())) > 1:
            raise WorkflowDefinitionError(
                f"{where}: one of call/switch/try/raise/return per step, not {sorted(actions)}"
            )
        if keys & {"raise", "return"} and "next" in keys:
            raise WorkflowDefinitionError(f"{where}: 'next' cannot follow raise/return")
        if ("args" in keys or "result" in keys) and "call" not in keys:
            raise WorkflowDefinitionError(f"{where}: 'args'/'result' need 'call'")
        if ("try" in keys) != ("except" in keys):
            missing = "except" if "try" in keys else "try"
            construct = (
                "'try' without 'except' (retry)"
                if missing == "except"
                else "'except' without 'try'"
            )
            raise UnsupportedConstruct(where, construct)
        return Body(
            assign=self.assignments(where, raw["assign"]) if "assign" in keys else (),
            call=self.call(where, raw) if "call" in keys else None,
            switch=self.switch(where, raw["switch"]) if "switch" in keys else None,
            try_body=self.try_body(where, raw["try"]) if "try" in keys else None,
            except_as=self.except_as(where, raw["except"]) if "except" in keys else None,
            except_steps=self.except_steps(where, raw["except"]) if "except" in keys else None,
            steps=self.steps(where, raw["steps"]) if "steps" in keys else None,
            raise_value=self.compile(where, raw["raise"]) if "raise" in keys else None,
            returns=self.compile(where, raw["return"]) if "return" in keys else None,
            has_return="return" in keys,
            next=self.next(where, raw["next"]) if "next" in keys else None,
        )

    def assignments(self, where: str, raw: Any) -> tuple[Assignment, ...]:
        if not isinstance(raw, list):
            raise WorkflowDefinitionError(f"{where}: 'assign' is a list of single-key maps")
        result = []
        for item in raw:
            if not isinstance(item, dict) or len(item) != 1:
                raise WorkflowDefinitionError(f"{where}: bad assignment {item!r}")
            ((target, value),) = item.items()
            node = self.parse(where, str(target))
            if not _is_assignable(node):
                raise WorkflowDefinitionError(f"{where}: cannot assign to {target!r}")
            self.check_nodes(where, node)
            template = self.compile(where, value)
            self.check_expressions(where, template)
            result.append(Assignment(node, template))
        return tuple(result)

    def call(self, where: str, raw: dict[str, Any]) -> CallSpec:
        function = raw["call"]
        if not isinstance(function, str):
            raise WorkflowDefinitionError(f"{where}: 'call' names a function or subworkflow")
        args = self.compile(where, raw["args"]) if "args" in raw else None
        if args is not None:
            self.check_expressions(where, args)
        if function in self.subworkflow_names:
            if "args" in raw and not isinstance(raw["args"], dict):
                raise UnsupportedConstruct(where, "positional arguments to a subworkflow")
            given = {str(key) for key in raw.get("args") or {}}
            self.pending_calls.append((where, function, given))
        elif function not in FUNCTIONS:
            raise UnsupportedConstruct(where, f"the function or connector {function!r}")
        result = raw.get("result")
        if result is not None and not isinstance(result, str):
            raise WorkflowDefinitionError(f"{where}: 'result' names a variable")
        return CallSpec(function, args, result)

    def switch(self, where: str, raw: Any) -> tuple[Branch, ...]:
        if not isinstance(raw, list) or not raw:
            raise WorkflowDefinitionError(f"{where}: 'switch' is a non-empty list of conditions")
        branches = []
        for item in raw:
            if not isinstance(item, dict) or "condition" not in item:
                raise WorkflowDefinitionError(f"{where}: each switch entry needs a 'condition'")
            condition = self.compile(where, item["condition"])
            self.check_expressions(where, condition)
            body = self.body(
                where, {k: v for k, v in item.items() if k != "condition"}, branch=True
            )
            if body == Body():
                raise WorkflowDefinitionError(f"{where}: a condition needs something to do")
            branches.append(Branch(condition, body))
        return tuple(branches)

    def try_body(self, where: str, raw: Any) -> Body:
        if not isinstance(raw, dict):
            raise WorkflowDefinitionError(f"{where}: 'try' holds a step body or 'steps'")
        return self.body(where, raw)

    def except_as(self, where: str, raw: Any) -> str | None:
        if not isinstance(raw, dict) or set(raw) - {"as", "steps"}:
            raise UnsupportedConstruct(where, f"the except block {raw!r}")
        name = raw.get("as")
        return str(name) if name is not None else None

    def except_steps(self, where: str, raw: dict[str, Any]) -> tuple[Step, ...]:
        return self.steps(where, raw["steps"]) if "steps" in raw else ()

    def next(self, where: str, raw: Any) -> str:
        if not isinstance(raw, str):
            raise WorkflowDefinitionError(f"{where}: 'next' names a step")
        if raw in _LOOP_JUMPS:
            raise UnsupportedConstruct(where, f"'next: {raw}' (loops)")
        return raw

    def compile(self, where: str, value: Any) -> Template:
        try:
            return compile_value(value)
        except UnsupportedConstruct as exc:
            raise UnsupportedConstruct(f"{where}: {exc.where}", exc.construct) from None
        except WorkflowDefinitionError as exc:
            raise WorkflowDefinitionError(f"{where}: {exc}") from None

    def parse(self, where: str, source: str) -> Node:
        try:
            return parse_expression(source)
        except UnsupportedConstruct as exc:
            raise UnsupportedConstruct(f"{where}: {exc.where}", exc.construct) from None
        except WorkflowDefinitionError as exc:
            raise WorkflowDefinitionError(f"{where}: {exc}") from None

    def check_expressions(self, where: str, template: Template) -> None:
        for root in template.expressions():
            self.check_nodes(where, root)

    def check_nodes(self, where: str, root: Node) -> None:
        for node in walk(root):
            if isinstance(node, Call):
                self.check_function(where, node.function)

    def check_function(self, where: str, name: str) -> None:
        function = FUNCTIONS.get(name)
        if name in self.subworkflow_names:
            raise UnsupportedConstruct(where, f"calling the subworkflow {name} in an expression")
        if function is None:
            raise UnsupportedConstruct(where, f"the function {name}() in an expression")
        if not function.in_expressions:
            raise UnsupportedConstruct(where, f"{name}() in an expression (use a call step)")

    def check_jumps(self, name: str, steps: tuple[Step, ...]) -> None:
        everything = list(_all_steps(steps))
        seen: set[str] = set()
        for step in everything:
            if step.name in seen:
                raise WorkflowDefinitionError(f"{step.where}: step name used twice in {name}")
            seen.add(step.name)
        for step in everything:
            for target in _jump_targets(step.body):
                if target != END and target not in seen:
                    raise WorkflowDefinitionError(f"{step.where}: next: {target} names no step")

    def check_calls(self, subworkflows: Mapping[str, Subworkflow]) -> None:
        """Subworkflow arguments against parameters: unknown or missing ones fail to load."""
        for where, function, given in self.pending_calls:
            params = subworkflows[function].params
            unknown = given - {p.name for p in params}
            missing = {p.name for p in params if p.required} - given
            if unknown or missing:
                detail = f"unknown {sorted(unknown)}, missing {sorted(missing)}"
                raise WorkflowDefinitionError(f"{where}: call {function}: {detail} argument(s)")


def _is_assignable(node: Node) -> bool:
    if isinstance(node, Name):
        return True
    if isinstance(node, Attribute):
        return _is_assignable(node.target)
    if isinstance(node, Index):
        return _is_assignable(node.target)
    return False


def _bodies(body: Body) -> list[Body]:
    nested = [body]
    for branch in body.switch or ():
        nested.extend(_bodies(branch.body))
    if body.try_body is not None:
        nested.extend(_bodies(body.try_body))
    return nested


def _all_steps(steps: tuple[Step, ...]) -> list[Step]:
    found: list[Step] = []
    for step in steps:
        found.append(step)
        for body in _bodies(step.body):
            found.extend(_all_steps(body.steps or ()))
            found.extend(_all_steps(body.except_steps or ()))
    return found


def _jump_targets(body: Body) -> list[str]:
    return [b.next for b in _bodies(body) if b.next is not None]
