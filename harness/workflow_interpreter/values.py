"""Workflows data types on Python values, and the equality the `==` and `in` operators use.

Types (https://cloud.google.com/workflows/docs/reference/syntax/datatypes): integer
(64-bit), double, string, boolean, bytes, null, list and map. Python's bool is an int
subclass, so every check here excludes bool from the numbers explicitly.
"""

from __future__ import annotations

import copy
from typing import Any


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return is_integer(value) or isinstance(value, float)


def type_name(value: Any) -> str:
    """The Workflows name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if is_integer(value):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    # Only a binding can hand us such a value: that is a harness bug, not a workflow error.
    raise TypeError(f"{type(value).__name__} is not a Workflows value: {value!r}")


def equal(left: Any, right: Any) -> bool:
    """Deep equality where true != 1 (Python would say True == 1) and 1 == 1.0."""
    if is_number(left) and is_number(right):
        return bool(left == right)
    if type_name(left) != type_name(right):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(
            equal(a, b) for a, b in zip(left, right, strict=True)
        )
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(equal(left[k], right[k]) for k in left)
    return bool(left == right)


def copy_value(value: Any) -> Any:
    """Workflows values behave as values: assigning a map must not alias it."""
    if isinstance(value, list | dict):
        return copy.deepcopy(value)
    return value
