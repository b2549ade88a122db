"""Run loaded steps: variables and scopes, assign, call, switch, try/except, raise, return, next.

Semantics (https://cloud.google.com/workflows/docs/reference/syntax):
- Steps run in order; `next: NAME` jumps to a step of the same or an enclosing
  `steps` list, `next: end` stops the (sub)workflow with a null result
  (https://cloud.google.com/workflows/docs/reference/syntax/jumps).
- A switch runs the first branch whose condition is true, then continues after
  the switch (or at its `next`); a condition must be a boolean
  (https://cloud.google.com/workflows/docs/reference/syntax/conditions).
- Variables live in one scope per (sub)workflow; an `except` block's variables,
  its `as` variable included, are local to that block
  (https://cloud.google.com/workflows/docs/reference/syntax/catching-errors#variable-scope).
- A subworkflow gets its parameters, a default for each one not passed, and
  nothing else from its caller
  (https://cloud.google.com/workflows/docs/reference/syntax/subworkflows).
- Values are copied on assignment, so a map assigned to two variables is two maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.workflow_interpreter.bindings import Bindings
from harness.workflow_interpreter.definition import (
    END,
    Assignment,
    Body,
    CallSpec,
    Step,
    WorkflowDefinition,
)
from harness.workflow_interpreter.errors import (
    UnsupportedConstruct,
    WorkflowError,
    index_error,
    key_error,
    type_error,
)
from harness.workflow_interpreter.evaluator import evaluate
from harness.workflow_interpreter.stdlib import FUNCTIONS
from harness.workflow_interpreter.syntax_tree import Attribute, Index, Name, Node
from harness.workflow_interpreter.values import copy_value, is_integer, type_name


class _Jump(Exception):  # control flow, not an error
    def __init__(self, target: str, where: str) -> None:
        super().__init__(target)
        self.target = target
        self.where = where


class _Return(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__("return")
        self.value = value


class _End(Exception):
    pass


class Scope:
    def __init__(self, parent: Scope | None = None) -> None:
        self.variables: dict[str, Any] = {}
        self.parent = parent

    def _owner(self, name: str) -> Scope | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.variables:
                return scope
            scope = scope.parent
        return None

    def get(self, name: str) -> Any:
        owner = self._owner(name)
        if owner is None:
            raise key_error(f"variable {name!r} is not defined")
        return owner.variables[name]

    def set(self, name: str, value: Any) -> None:
        # An existing variable is updated where it lives; a new one is local.
        (self._owner(name) or self).variables[name] = value


class _Frame:
    """The evaluator's view of one scope."""

    def __init__(self, bindings: Bindings, scope: Scope) -> None:
        self.bindings = bindings
        self.scope = scope

    def lookup(self, name: str) -> Any:
        return self.scope.get(name)

    def call_function(self, name: str, args: Sequence[Any]) -> Any:
        function = FUNCTIONS[name]  # checked at load time
        return function.impl(self.bindings, function.bind(positional=args))


class Interpreter:
    def __init__(self, definition: WorkflowDefinition, bindings: Bindings) -> None:
        self.definition = definition
        self.bindings = bindings

    def run_subworkflow(self, name: str, args: dict[str, Any]) -> Any:
        subworkflow = self.definition.subworkflows[name]
        scope = Scope()
        names = {param.name for param in subworkflow.params}
        unknown = sorted(set(args) - names)
        if unknown:
            raise type_error(f"{name}: unexpected argument(s) {unknown}")
        for param in subworkflow.params:
            if param.name in args:
                scope.set(param.name, copy_value(args[param.name]))
            elif param.required:
                raise type_error(f"{name}: missing argument {param.name!r}")
            else:
                scope.set(param.name, copy_value(param.default))
        try:
            self.run_steps(subworkflow.steps, scope)
        except _Return as returned:
            return returned.value
        except _End:
            return None
        except _Jump as jump:
            raise UnsupportedConstruct(
                jump.where, f"next: {jump.target} into a nested block"
            ) from None
        return None

    def run_steps(self, steps: Sequence[Step], scope: Scope) -> None:
        positions = {step.name: index for index, step in enumerate(steps)}
        index = 0
        while index < len(steps):
            step = steps[index]
            try:
                target = self.run_body(step, step.body, scope)
            except _Jump as jump:
                if jump.target not in positions:
                    raise
                target = jump.target
            if target is None:
                index += 1
            elif target == END:
                raise _End
            elif target in positions:
                index = positions[target]
            else:
                raise _Jump(target, step.where)

    def run_body(self, step: Step, body: Body, scope: Scope) -> str | None:
        """Run one step body; return the `next` target, if any."""
        frame = _Frame(self.bindings, scope)
        for assignment in body.assign:
            self.assign(assignment, frame)
        if body.call is not None:
            self.call(body.call, frame)
        if body.switch is not None:
            for branch in body.switch:
                condition = branch.condition.evaluate(frame)
                if not isinstance(condition, bool):
                    raise type_error(
                        f"{step.where}: a condition must be a boolean, not {type_name(condition)}"
                    )
                if condition:
                    target = self.run_body(step, branch.body, scope)
                    if target is not None:
                        return target
                    break
        if body.try_body is not None:
            target = self.run_try(step, body, scope)
            if target is not None:
                return target
        if body.steps is not None:
            self.run_steps(body.steps, scope)
        if body.raise_value is not None:
            raise WorkflowError(copy_value(body.raise_value.evaluate(frame)))
        if body.has_return:
            value = body.returns.evaluate(frame) if body.returns is not None else None
            raise _Return(copy_value(value))
        return body.next

    def run_try(self, step: Step, body: Body, scope: Scope) -> str | None:
        assert body.try_body is not None
        try:
            return self.run_body(step, body.try_body, scope)
        except WorkflowError as error:
            local = Scope(scope)
            if body.except_as is not None:
                local.variables[body.except_as] = copy_value(error.value)
            self.run_steps(body.except_steps or (), local)
            return None

    def call(self, spec: CallSpec, frame: _Frame) -> None:
        args = spec.args.evaluate(frame) if spec.args is not None else {}
        if spec.function in self.definition.subworkflows:
            value = self.run_subworkflow(spec.function, args)
        else:
            function = FUNCTIONS[spec.function]
            if isinstance(args, list):
                bound = function.bind(positional=args)
            elif isinstance(args, dict):
                bound = function.bind(named=args)
            else:
                raise type_error(f"{spec.function}: args must be a map or a list")
            value = function.impl(self.bindings, bound)
        if spec.result is not None:
            frame.scope.set(spec.result, copy_value(value))

    def assign(self, assignment: Assignment, frame: _Frame) -> None:
        value = copy_value(assignment.value.evaluate(frame))
        node: Node = assignment.target
        path: list[Any] = []
        while not isinstance(node, Name):
            if isinstance(node, Attribute):
                path.insert(0, node.name)
                node = node.target
            elif isinstance(node, Index):
                path.insert(0, evaluate(node.index, frame))
                node = node.target
            else:  # rejected at load time
                raise TypeError(f"cannot assign to {node!r}")
        if not path:
            frame.scope.set(node.name, value)
            return
        container = frame.scope.get(node.name)
        for key in path[:-1]:
            # A missing intermediate key is an error here, not created: not documented either way.
            container = _read(container, key)
        _store(container, path[-1], value)


def _read(container: Any, key: Any) -> Any:
    if isinstance(container, dict) and isinstance(key, str):
        if key not in container:
            raise key_error(f"key not found: {key}")
        return container[key]
    if isinstance(container, list) and is_integer(key):
        if not 0 <= key < len(container):
            raise index_error(f"list index {key} out of range")
        return container[key]
    raise type_error(f"cannot index {type_name(container)} with {type_name(key)}")


def _store(container: Any, key: Any, value: Any) -> None:
    if isinstance(container, dict) and isinstance(key, str):
        container[key] = value
    elif isinstance(container, list) and is_integer(key):
        if not 0 <= key < len(container):
            raise index_error(f"list index {key} out of range")
        container[key] = value
    else:
        raise type_error(f"cannot assign into {type_name(container)} with {type_name(key)}")
