"""A local interpreter for the subset of the Google Cloud Workflows language that
workflow.yaml uses, so that the harness runs the real file rather than a Python copy.

    from harness.workflow_interpreter import Bindings, run_workflow
    result = run_workflow(Path("workflow.yaml"), {"payload": {...}}, bindings=Bindings(...))

Modules, one concern each: lexer and syntax_tree (parse `${...}`), operators and
evaluator (evaluate it), stdlib (the functions), errors (tagged error maps),
definition (load and check steps), interpreter (run them), bindings (the outside
world), api (these entry points). Anything outside the subset raises
UnsupportedConstruct naming the step. Language reference:
https://cloud.google.com/workflows/docs/reference/syntax
"""

from harness.workflow_interpreter.api import load_workflow, run_workflow
from harness.workflow_interpreter.bindings import Bindings, LogEntry, builtin_environment
from harness.workflow_interpreter.definition import WorkflowDefinition
from harness.workflow_interpreter.errors import (
    ExecutionFailed,
    UnsupportedConstruct,
    WorkflowDefinitionError,
    WorkflowError,
    error_map,
)

__all__ = [
    "Bindings",
    "ExecutionFailed",
    "LogEntry",
    "UnsupportedConstruct",
    "WorkflowDefinition",
    "WorkflowDefinitionError",
    "WorkflowError",
    "builtin_environment",
    "error_map",
    "load_workflow",
    "run_workflow",
]
