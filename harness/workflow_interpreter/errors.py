"""Errors: the tagged error maps a workflow can catch, and the harness's own loud failures.

Two kinds, kept apart on purpose:
- `WorkflowError` is a Workflows runtime error. It carries the value that
  `except: as: e` binds: for built-in errors a map {"message": ..., "tags": [TAG]},
  for `raise` whatever was raised (a string or a map). A workflow catches it.
- `WorkflowDefinitionError` (and `UnsupportedConstruct`) means the definition is
  malformed or uses something outside the subset this interpreter implements.
  Nothing in the workflow can catch it: the harness must stop, naming the step.

Sources:
  https://cloud.google.com/workflows/docs/reference/syntax/error-types
  https://cloud.google.com/workflows/docs/reference/syntax/raising-errors
  https://cloud.google.com/workflows/docs/reference/syntax/catching-errors
"""

from __future__ import annotations

import json
from typing import Any

# Tags this interpreter raises itself (a subset of the documented table).
TYPE_ERROR = "TypeError"
KEY_ERROR = "KeyError"
VALUE_ERROR = "ValueError"
INDEX_ERROR = "IndexError"
ZERO_DIVISION_ERROR = "ZeroDivisionError"
TIMEOUT_ERROR = "TimeoutError"


class WorkflowError(Exception):
    """A Workflows error in flight; `value` is what `except: as: e` binds."""

    def __init__(self, value: Any) -> None:
        self.value = value
        super().__init__(describe(value))

    @property
    def tags(self) -> list[str]:
        if isinstance(self.value, dict) and isinstance(self.value.get("tags"), list):
            return [str(tag) for tag in self.value["tags"]]
        return []


class ExecutionFailed(Exception):
    """The execution ended with an uncaught error; `error` is the error value (map or string)."""

    def __init__(self, error: Any) -> None:
        self.error = error
        super().__init__(f"execution failed: {describe(error)}")

    @property
    def tags(self) -> list[str]:
        return WorkflowError(self.error).tags


class WorkflowDefinitionError(ValueError):
    """The definition is malformed (Workflows would reject it at deployment)."""


class UnsupportedConstruct(WorkflowDefinitionError):
    """A construct outside the implemented subset: stop loudly rather than guess."""

    def __init__(self, where: str, construct: str) -> None:
        self.where = where
        self.construct = construct
        super().__init__(f"{where}: {construct} is not supported by the local interpreter")


def error_map(tag: str, message: str) -> dict[str, Any]:
    """The documented shape of a built-in error: {"message", "tags"}."""
    return {"message": message, "tags": [tag]}


def tagged(tag: str, message: str) -> WorkflowError:
    return WorkflowError(error_map(tag, message))


def type_error(message: str) -> WorkflowError:
    return tagged(TYPE_ERROR, message)


def key_error(message: str) -> WorkflowError:
    return tagged(KEY_ERROR, message)


def value_error(message: str) -> WorkflowError:
    return tagged(VALUE_ERROR, message)


def index_error(message: str) -> WorkflowError:
    return tagged(INDEX_ERROR, message)


def zero_division_error(message: str) -> WorkflowError:
    return tagged(ZERO_DIVISION_ERROR, message)


def describe(value: Any) -> str:
    """A one-line rendering of an error value for Python messages."""
    try:
        return json.dumps(value, default=repr, ensure_ascii=False)[:500]
    except (TypeError, ValueError):
        return repr(value)[:500]
