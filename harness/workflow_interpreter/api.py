"""The public entry points: load a definition, run it against bindings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.workflow_interpreter.bindings import Bindings
from harness.workflow_interpreter.definition import WorkflowDefinition, load_definition
from harness.workflow_interpreter.errors import (
    ExecutionFailed,
    WorkflowDefinitionError,
    WorkflowError,
)
from harness.workflow_interpreter.interpreter import Interpreter

WorkflowSource = WorkflowDefinition | Path | str | Mapping[str, Any] | Sequence[Any]


def load_workflow(source: WorkflowSource) -> WorkflowDefinition:
    """A checked definition from a file (Path), YAML/JSON text (str), or a parsed document.

    Raises WorkflowDefinitionError (UnsupportedConstruct for constructs outside the
    subset) before anything runs.
    """
    if isinstance(source, WorkflowDefinition):
        return source
    if isinstance(source, Path):
        source = source.read_text(encoding="utf-8")
    document = yaml.safe_load(source) if isinstance(source, str) else source
    return load_definition(document)


def run_workflow(
    workflow: WorkflowSource,
    arguments: Any = None,
    *,
    bindings: Bindings,
    entry: str = "main",
) -> Any:
    """Execute `entry` and return its result.

    For `main`, `arguments` is the execution's runtime argument (bound to main's
    single parameter, null when not given). For a subworkflow, `arguments` is the
    map of its parameters, so a user can run their own copy of one directly.
    Raises ExecutionFailed (with the error map or raised value) on an uncaught error.
    """
    definition = load_workflow(workflow)
    subworkflow = definition.subworkflows.get(entry)
    if subworkflow is None:
        raise WorkflowDefinitionError(f"no subworkflow named {entry!r}")
    if entry == "main":
        if len(subworkflow.params) > 1:
            raise WorkflowDefinitionError("main takes at most one parameter (the runtime argument)")
        args = {subworkflow.params[0].name: arguments} if subworkflow.params else {}
    else:
        if not isinstance(arguments, dict | None):
            raise TypeError("a subworkflow's arguments are a map of its parameters")
        args = dict(arguments or {})
    try:
        return Interpreter(definition, bindings).run_subworkflow(entry, args)
    except WorkflowError as error:
        raise ExecutionFailed(error.value) from error
