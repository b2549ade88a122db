"""Expression syntax tree and its recursive-descent parser.

Precedence follows Google's table, highest first
(https://cloud.google.com/workflows/docs/reference/syntax/datatypes#order-of-operations):
`()`, `.`, `[]`, `not`, unary `-`, `* / // %`, `+ -`,
`< <= >= > == != in` (one level, left to right), `and`, `or`.
Note that `not` binds tighter than comparison: `not a == b` is `(not a) == b`.
Logical keywords may be lower or upper case, not mixed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.workflow_interpreter.errors import UnsupportedConstruct, WorkflowDefinitionError
from harness.workflow_interpreter.lexer import Token, tokenize, unquote


class Node:
    """Base of the expression tree."""


@dataclasses.dataclass(frozen=True)
class Literal(Node):
    value: Any


@dataclasses.dataclass(frozen=True)
class ListLiteral(Node):
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class MapLiteral(Node):
    entries: tuple[tuple[Node, Node], ...]


@dataclasses.dataclass(frozen=True)
class Name(Node):
    name: str


@dataclasses.dataclass(frozen=True)
class Attribute(Node):
    target: Node
    name: str


@dataclasses.dataclass(frozen=True)
class Index(Node):
    target: Node
    index: Node


@dataclasses.dataclass(frozen=True)
class Call(Node):
    function: str  # dotted, e.g. "map.get"
    args: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Unary(Node):
    operator: str  # "not" | "-"
    operand: Node


@dataclasses.dataclass(frozen=True)
class Binary(Node):
    operator: str  # "and", "or", "in", "+", "==", ...
    left: Node
    right: Node


def _keyword(token: Token, word: str) -> bool:
    return token.kind == "name" and token.text in (word, word.upper())


_LITERAL_NAMES: dict[str, Any] = {
    "true": True,
    "True": True,
    "TRUE": True,
    "false": False,
    "False": False,
    "FALSE": False,
    "null": None,
}
_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
_RESERVED = {"and", "or", "not", "in", "AND", "OR", "NOT", "IN"}


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.index = 0

    # -- token helpers --
    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at_op(self, *ops: str) -> bool:
        token = self.peek()
        return token.kind == "op" and token.text in ops

    def expect_op(self, op: str) -> None:
        token = self.advance()
        if token.kind != "op" or token.text != op:
            self.fail(f"expected {op!r}, found {token.text or 'the end'!r}", token)

    def fail(self, message: str, token: Token | None = None) -> None:
        at = token.position if token is not None else self.peek().position
        raise WorkflowDefinitionError(f"expression {self.source!r}: {message} (at {at})")

    # -- grammar --
    def parse(self) -> Node:
        node = self.or_expression()
        if self.peek().kind != "end":
            self.fail(f"unexpected {self.peek().text!r}")
        return node

    def or_expression(self) -> Node:
        node = self.and_expression()
        while _keyword(self.peek(), "or"):
            self.advance()
            node = Binary("or", node, self.and_expression())
        return node

    def and_expression(self) -> Node:
        node = self.comparison()
        while _keyword(self.peek(), "and"):
            self.advance()
            node = Binary("and", node, self.comparison())
        return node

    def comparison(self) -> Node:
        node = self.additive()
        while True:
            if self.at_op(*_COMPARISONS):
                operator = self.advance().text
            elif _keyword(self.peek(), "in"):
                self.advance()
                operator = "in"
            elif _keyword(self.peek(), "not"):
                # `x not in y` is not in Google's operator table.
                raise UnsupportedConstruct(f"expression {self.source!r}", "the operator 'not in'")
            else:
                return node
            node = Binary(operator, node, self.additive())

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.at_op("+", "-"):
            operator = self.advance().text
            node = Binary(operator, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while self.at_op("*", "/", "//", "%"):
            operator = self.advance().text
            node = Binary(operator, node, self.unary())
        return node

    def unary(self) -> Node:
        if _keyword(self.peek(), "not"):
            self.advance()
            return Unary("not", self.unary())
        if self.at_op("-"):
            self.advance()
            return Unary("-", self.unary())
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while True:
            if self.at_op("."):
                self.advance()
                token = self.advance()
                if token.kind != "name":
                    self.fail("expected a field name after '.'", token)
                node = Attribute(node, token.text)
            elif self.at_op("["):
                self.advance()
                index = self.or_expression()
                self.expect_op("]")
                node = Index(node, index)
            elif self.at_op("("):
                node = Call(self.dotted_name(node), self.arguments())
            else:
                return node

    def dotted_name(self, node: Node) -> str:
        if isinstance(node, Name):
            return node.name
        if isinstance(node, Attribute):
            return f"{self.dotted_name(node.target)}.{node.name}"
        self.fail("only named functions can be called")
        raise AssertionError  # unreachable: fail() raises

    def arguments(self) -> tuple[Node, ...]:
        self.expect_op("(")
        args: list[Node] = []
        if not self.at_op(")"):
            args.append(self.or_expression())
            while self.at_op(","):
                self.advance()
                args.append(self.or_expression())
        self.expect_op(")")
        return tuple(args)

    def primary(self) -> Node:
        token = self.advance()
        if token.kind == "number":
            is_double = any(c in token.text for c in ".eE")
            return Literal(float(token.text) if is_double else int(token.text))
        if token.kind == "string":
            return Literal(unquote(token.text))
        if token.kind == "name":
            if token.text in _LITERAL_NAMES:
                return Literal(_LITERAL_NAMES[token.text])
            if token.text in _RESERVED:
                self.fail(f"unexpected keyword {token.text!r}", token)
            return Name(token.text)
        if token.kind == "op" and token.text == "(":
            node = self.or_expression()
            self.expect_op(")")
            return node
        if token.kind == "op" and token.text == "[":
            return ListLiteral(self.sequence("]"))
        if token.kind == "op" and token.text == "{":
            return self.map_literal()
        self.fail(f"unexpected {token.text or 'end of expression'!r}", token)
        raise AssertionError  # unreachable

    def sequence(self, closing: str) -> tuple[Node, ...]:
        items: list[Node] = []
        while not self.at_op(closing):
            items.append(self.or_expression())
            if not self.at_op(closing):
                self.expect_op(",")
        self.advance()
        return tuple(items)

    def map_literal(self) -> MapLiteral:
        entries: list[tuple[Node, Node]] = []
        while not self.at_op("}"):
            key = self.or_expression()
            self.expect_op(":")
            entries.append((key, self.or_expression()))
            if not self.at_op("}"):
                self.expect_op(",")
        self.advance()
        return MapLiteral(tuple(entries))


def parse_expression(source: str) -> Node:
    """Parse the text between `${` and `}`."""
    if not source.strip():
        raise WorkflowDefinitionError("empty expression ${}")
    return _Parser(source).parse()


def walk(node: Node) -> list[Node]:
    """Every node of a tree, depth first (for load-time checks)."""
    found: list[Node] = [node]
    children: list[Node] = []
    if isinstance(node, ListLiteral):
        children = list(node.items)
    elif isinstance(node, MapLiteral):
        children = [part for entry in node.entries for part in entry]
    elif isinstance(node, Attribute):
        children = [node.target]
    elif isinstance(node, Index):
        children = [node.target, node.index]
    elif isinstance(node, Call):
        children = list(node.args)
    elif isinstance(node, Unary):
        children = [node.operand]
    elif isinstance(node, Binary):
        children = [node.left, node.right]
    for child in children:
        found.extend(walk(child))
    return found
