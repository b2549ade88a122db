"""Evaluate expression trees and YAML values that contain `${...}`.

A YAML string is an expression only when the whole string is `${...}`; text around
it is not interpolated. Maps and lists are evaluated member by member, map keys
included (dynamic keys: https://cloud.google.com/workflows/docs/reference/syntax/maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from harness.workflow_interpreter import operators
from harness.workflow_interpreter.errors import WorkflowDefinitionError, type_error
from harness.workflow_interpreter.syntax_tree import (
    Attribute,
    Binary,
    Call,
    Index,
    ListLiteral,
    Literal,
    MapLiteral,
    Name,
    Node,
    Unary,
    parse_expression,
)
from harness.workflow_interpreter.values import type_name


class Context(Protocol):
    """What an expression can reach: variables and functions."""

    def lookup(self, name: str) -> Any: ...

    def call_function(self, name: str, args: Sequence[Any]) -> Any: ...


def evaluate(node: Node, context: Context) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Name):
        return context.lookup(node.name)
    if isinstance(node, Attribute):
        return operators.get_field(evaluate(node.target, context), node.name)
    if isinstance(node, Index):
        target = evaluate(node.target, context)
        return operators.get_item(target, evaluate(node.index, context))
    if isinstance(node, Call):
        return context.call_function(node.function, [evaluate(a, context) for a in node.args])
    if isinstance(node, Unary):
        operand = evaluate(node.operand, context)
        if node.operator == "not":
            return not operators.require_boolean("not", operand)
        return operators.negate(operand)
    if isinstance(node, Binary):
        return _binary(node, context)
    if isinstance(node, ListLiteral):
        return [evaluate(item, context) for item in node.items]
    if isinstance(node, MapLiteral):
        return {_key(evaluate(k, context)): evaluate(v, context) for k, v in node.entries}
    raise TypeError(f"unknown expression node {node!r}")


def _binary(node: Binary, context: Context) -> Any:
    left = evaluate(node.left, context)
    if node.operator in ("and", "or"):
        # Short-circuit, but the left side must still be a boolean.
        decided = operators.require_boolean(node.operator, left)
        if decided == (node.operator == "or"):
            return decided
        return operators.require_boolean(node.operator, evaluate(node.right, context))
    return operators.BINARY[node.operator](left, evaluate(node.right, context))


def _key(value: Any) -> str:
    if not isinstance(value, str):
        raise type_error(f"map keys must be strings, not {type_name(value)}")
    return value


def expression_source(value: Any) -> str | None:
    """The text inside `${...}` when the whole YAML string is an expression."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("${") and stripped.endswith("}"):
            return stripped[2:-1]
    return None


class Template:
    """A YAML value with its expressions parsed once, at load time."""

    def evaluate(self, context: Context) -> Any:
        raise NotImplementedError

    def expressions(self) -> list[Node]:
        return []


class Constant(Template):
    def __init__(self, value: Any) -> None:
        self.value = value

    def evaluate(self, context: Context) -> Any:
        return self.value


class Expression(Template):
    def __init__(self, source: str) -> None:
        self.source = source
        self.node = parse_expression(source)

    def evaluate(self, context: Context) -> Any:
        return evaluate(self.node, context)

    def expressions(self) -> list[Node]:
        return [self.node]


class ListTemplate(Template):
    def __init__(self, items: list[Template]) -> None:
        self.items = items

    def evaluate(self, context: Context) -> Any:
        return [item.evaluate(context) for item in self.items]

    def expressions(self) -> list[Node]:
        return [node for item in self.items for node in item.expressions()]


class MapTemplate(Template):
    def __init__(self, entries: list[tuple[Template, Template]]) -> None:
        self.entries = entries

    def evaluate(self, context: Context) -> Any:
        return {_key(k.evaluate(context)): v.evaluate(context) for k, v in self.entries}

    def expressions(self) -> list[Node]:
        return [node for pair in self.entries for part in pair for node in part.expressions()]


def compile_value(value: Any) -> Template:
    """Turn a YAML value into a Template; a bad expression fails here, at load time."""
    source = expression_source(value)
    if source is not None:
        return Expression(source)
    if isinstance(value, list):
        return ListTemplate([compile_value(item) for item in value])
    if isinstance(value, dict):
        return MapTemplate([(compile_value(k), compile_value(v)) for k, v in value.items()])
    if value is None or isinstance(value, bool | int | float | str):
        return Constant(value)
    raise WorkflowDefinitionError(f"YAML value {value!r} is not a Workflows value")
