"""Operator semantics: which types each operator takes, and which error it raises.

From https://cloud.google.com/workflows/docs/reference/syntax/expressions and
https://cloud.google.com/workflows/docs/reference/syntax/datatypes:
- `+` adds numbers or concatenates two strings; anything else (string + integer)
  is a TypeError: convert with string() first.
- integer op integer stays integer, except `/`, which is float division.
- integer op double is double.
- logical operators take booleans only.
- `in` checks a key of a map or an element of a list.
  `in` on null (or any other type) is a TypeError.
- Division by zero is a ZeroDivisionError.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from harness.workflow_interpreter.errors import (
    UnsupportedConstruct,
    index_error,
    key_error,
    type_error,
    zero_division_error,
)
from harness.workflow_interpreter.values import equal, is_integer, is_number, type_name


def _operands(operator: str, left: Any, right: Any) -> str:
    return f"unsupported operand types for {operator}: {type_name(left)} and {type_name(right)}"


def _numbers(operator: str, left: Any, right: Any) -> None:
    if not (is_number(left) and is_number(right)):
        raise type_error(_operands(operator, left, right))


def _arithmetic_result(left: Any, right: Any, result: float | int) -> Any:
    return result if is_integer(left) and is_integer(right) else float(result)


def add(left: Any, right: Any) -> Any:
    if isinstance(left, str) and isinstance(right, str):
        return left + right
    _numbers("+", left, right)
    return _arithmetic_result(left, right, left + right)


def subtract(left: Any, right: Any) -> Any:
    _numbers("-", left, right)
    return _arithmetic_result(left, right, left - right)


def multiply(left: Any, right: Any) -> Any:
    _numbers("*", left, right)
    return _arithmetic_result(left, right, left * right)


def divide(left: Any, right: Any) -> float:
    _numbers("/", left, right)
    if right == 0:
        raise zero_division_error("division by zero")
    return float(left) / float(right)


def _no_negatives(operator: str, left: Any, right: Any) -> None:
    # Floor vs truncated rounding of negative operands is not documented: refuse to guess.
    if left < 0 or right < 0:
        raise UnsupportedConstruct(f"{left} {operator} {right}", "a negative operand of //, %")


def floor_divide(left: Any, right: Any) -> Any:
    _numbers("//", left, right)
    if right == 0:
        raise zero_division_error("division by zero")
    _no_negatives("//", left, right)
    if is_integer(left) and is_integer(right):
        return left // right
    return float(math.floor(left / right))


def remainder(left: Any, right: Any) -> Any:
    _numbers("%", left, right)
    if right == 0:
        raise zero_division_error("modulo by zero")
    _no_negatives("%", left, right)
    return _arithmetic_result(left, right, left % right)


def _ordered(operator: str, left: Any, right: Any) -> None:
    both_numbers = is_number(left) and is_number(right)
    both_strings = isinstance(left, str) and isinstance(right, str)
    if not (both_numbers or both_strings):
        raise type_error(_operands(operator, left, right))


def less(left: Any, right: Any) -> bool:
    _ordered("<", left, right)
    return bool(left < right)


def less_equal(left: Any, right: Any) -> bool:
    _ordered("<=", left, right)
    return bool(left <= right)


def greater(left: Any, right: Any) -> bool:
    _ordered(">", left, right)
    return bool(left > right)


def greater_equal(left: Any, right: Any) -> bool:
    _ordered(">=", left, right)
    return bool(left >= right)


def contains(left: Any, right: Any) -> bool:
    """`left in right`: a key of a map, or an element of a list."""
    if isinstance(right, list):
        return any(equal(left, item) for item in right)
    if isinstance(right, dict):
        if not isinstance(left, str):
            raise type_error(f"map keys are strings, not {type_name(left)}")
        return left in right
    raise type_error(f"'in' needs a list or a map on its right, not {type_name(right)}")


BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": add,
    "-": subtract,
    "*": multiply,
    "/": divide,
    "//": floor_divide,
    "%": remainder,
    "<": less,
    "<=": less_equal,
    ">": greater,
    ">=": greater_equal,
    "==": equal,
    "!=": lambda left, right: not equal(left, right),
    "in": contains,
}


def require_boolean(operator: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise type_error(f"'{operator}' needs booleans, not {type_name(value)}")
    return value


def negate(value: Any) -> Any:
    if not is_number(value):
        raise type_error(f"bad operand type for unary -: {type_name(value)}")
    return -value


def get_field(target: Any, name: str) -> Any:
    """`target.name`: a map key; a missing key is a KeyError."""
    if not isinstance(target, dict):
        raise type_error(f"cannot read field {name!r} of {type_name(target)}")
    if name not in target:
        raise key_error(f"key not found: {name}")
    return target[name]


def get_item(target: Any, index: Any) -> Any:
    """`target[index]`: a list element by integer, or a map value by string."""
    if isinstance(target, list):
        if not is_integer(index):
            raise type_error(f"list indices must be integers, not {type_name(index)}")
        if not 0 <= index < len(target):
            raise index_error(f"list index {index} out of range (length {len(target)})")
        return target[index]
    if isinstance(target, dict):
        if not isinstance(index, str):
            raise type_error(f"map keys are strings, not {type_name(index)}")
        return get_field(target, index)
    raise type_error(f"{type_name(target)} cannot be indexed")
