"""Tokenizer for the text inside `${...}`.

Elements (https://cloud.google.com/workflows/docs/reference/syntax/expressions):
numbers, strings (double or single quoted: the error-types page itself writes
`${'SystemError' in e.tags}`), names, and the operators
`+ - * / // % == != < <= > >= ( ) [ ] { } , . :`.
Keywords (and/or/not/in, true/false/null) are names the parser recognises.
"""

from __future__ import annotations

import dataclasses
import re

from harness.workflow_interpreter.errors import WorkflowDefinitionError

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<number>(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>//|==|!=|<=|>=|[-+*/%<>()\[\]{},.:])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


@dataclasses.dataclass(frozen=True)
class Token:
    kind: str  # number | string | name | op | end
    text: str
    position: int


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(source):
        match = _TOKEN_RE.match(source, position)
        if match is None:
            raise WorkflowDefinitionError(
                f"cannot read expression {source!r} at {position}: {source[position:]!r}"
            )
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group(kind), position))
        position = match.end()
    tokens.append(Token("end", "", len(source)))
    return tokens


def unquote(literal: str) -> str:
    """The value of a quoted string literal, with JSON-style escapes."""
    body = literal[1:-1]
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        escape = body[index + 1]
        if escape == "u":
            digits = body[index + 2 : index + 6]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                raise WorkflowDefinitionError(f"bad \\u escape in {literal!r}")
            out.append(chr(int(digits, 16)))
            index += 6
        elif escape in _ESCAPES:
            out.append(_ESCAPES[escape])
            index += 2
        else:
            raise WorkflowDefinitionError(f"unknown escape \\{escape} in {literal!r}")
    return "".join(out)
