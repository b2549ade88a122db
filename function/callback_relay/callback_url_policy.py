"""Which URLs may receive the relay's OAuth token.

The token can resume any workflow in the project, so the only acceptable
target is a Workflows callback URL, matched as an exact string:

    https://workflowexecutions.googleapis.com/v1/projects/{p}/locations/{l}
        /workflows/{w}/executions/{e}/callbacks/{c}

The URL is matched as raw text, never parsed and re-assembled, so that no
difference between two URL parsers can smuggle in another host.
Source of the shape: the sendHttpCallback REST method,
https://cloud.google.com/workflows/docs/reference/executionsapi/rest/v1/projects.locations.workflows.executions.callbacks
"""

from __future__ import annotations

import dataclasses
import re

from callback_relay.errors import CallbackUrlRefused
from callback_relay.outcomes import Reason

GOOGLE_ORIGIN = "https://workflowexecutions.googleapis.com"

# Project ids and numbers, region names, workflow ids (letters, digits, '-' and
# '_'), and the generated execution and callback ids. ALLOWED_WORKFLOWS entries
# use the same grammar (config.py), so that every entry can match some URL.
PROJECT_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
LOCATION_PATTERN = r"[a-z][a-z0-9-]{0,62}"
RESOURCE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
_PATH_RE = re.compile(
    rf"/v1/projects/(?P<project>{PROJECT_PATTERN})/locations/(?P<location>{LOCATION_PATTERN})"
    rf"/workflows/(?P<workflow>{RESOURCE_ID_PATTERN})"
    rf"/executions/(?P<execution>{RESOURCE_ID_PATTERN})"
    rf"/callbacks/(?P<callback>{RESOURCE_ID_PATTERN})"
)
# Anything outside printable ASCII, plus characters that change how a URL parses.
_FORBIDDEN_RE = re.compile(r"[^\x21-\x7e]|[\\%@?#]")
# A URL of a local stand-in: say how the relay is pointed at one.
_LOCAL_RE = re.compile(r"https?://(127\.[0-9.]+|localhost|\[::1\]|0\.0\.0\.0)(:|/|$)", re.I)
_LOCAL_HINT = (
    "a local Workflows API is accepted only at WORKFLOWS_EMULATOR_HOST (host:port),"
    " set where the relay (or tools.publish) runs"
)


@dataclasses.dataclass(frozen=True)
class WorkflowPattern:
    """One ALLOWED_WORKFLOWS entry; ``None`` in a field matches any value."""

    project: str | None
    location: str | None
    workflow: str | None

    def matches(self, project: str, location: str, workflow: str) -> bool:
        return (
            (self.project is None or self.project == project)
            and (self.location is None or self.location == location)
            and (self.workflow is None or self.workflow == workflow)
        )


@dataclasses.dataclass(frozen=True)
class CallbackTarget:
    url: str
    project: str
    location: str
    workflow: str
    execution: str
    callback: str

    @property
    def workflow_name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/workflows/{self.workflow}"


class CallbackUrlPolicy:
    def __init__(
        self, origin: str | None = None, allowed_workflows: tuple[WorkflowPattern, ...] = ()
    ) -> None:
        self.origin = origin or GOOGLE_ORIGIN
        self.allowed_workflows = allowed_workflows

    def check(self, url: str) -> CallbackTarget:
        """Return the parsed target, or raise CallbackUrlRefused with the reason."""
        if _FORBIDDEN_RE.search(url):
            raise CallbackUrlRefused(
                Reason.FORBIDDEN_CHARACTERS,
                "callback_url contains whitespace, control, non-ASCII or one of \\ % @ ? #",
            )
        if not url.startswith(self.origin + "/"):
            detail = f"callback_url must start with {self.origin}/"
            if _LOCAL_RE.match(url):
                detail += f"; {_LOCAL_HINT}"
            raise CallbackUrlRefused(Reason.WRONG_ORIGIN, detail)
        match = _PATH_RE.fullmatch(url, len(self.origin))
        if match is None:
            raise CallbackUrlRefused(
                Reason.WRONG_PATH,
                "callback_url path must be /v1/projects/P/locations/L/workflows/W"
                "/executions/E/callbacks/C",
            )
        target = CallbackTarget(url=url, **match.groupdict())
        if self.allowed_workflows and not any(
            p.matches(target.project, target.location, target.workflow)
            for p in self.allowed_workflows
        ):
            raise CallbackUrlRefused(
                Reason.WORKFLOW_NOT_ALLOWED, f"{target.workflow_name} is not in ALLOWED_WORKFLOWS"
            )
        return target
