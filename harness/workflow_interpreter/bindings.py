"""What the interpreter needs from the outside world, as one small typed interface.

The harness binds these to the fake Workflows callback API and the Pub/Sub
emulator; unit tests bind them to in-memory doubles. Everything a workflow can
observe that is not pure computation comes through here: callbacks, publishing,
the clock, the environment and the log.

- create_callback_endpoint(http_callback_method) -> {"url": ...}
  https://cloud.google.com/workflows/docs/reference/stdlib/events/create_callback_endpoint
- await_callback(callback, timeout) -> the callback request map
  ({"http_request": {"body", "headers", "method", "query", "url"}, ...}),
  or None when `timeout` seconds pass without one: the interpreter then raises the
  documented TimeoutError.
  https://cloud.google.com/workflows/docs/reference/stdlib/events/await_callback
- publish(topic, body) -> the API response ({"messageIds": [...]}); `body` is the
  connector's request body {"messages": [{"data": base64, "attributes": {...}}]}.
  https://cloud.google.com/workflows/docs/reference/googleapis/pubsub/v1/projects.topics/publish
- now() -> seconds since the epoch (sys.now).
- environment: user variables plus the built-in GOOGLE_CLOUD_* ones (sys.get_env).
  https://cloud.google.com/workflows/docs/reference/environment-variables
- log(entry): every sys.log call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One sys.log call: `payload_kind` is "text" or "json", as Cloud Logging would store it."""

    severity: str
    payload_kind: str
    payload: Any


@dataclasses.dataclass
class Bindings:
    create_callback_endpoint: Callable[[str], Mapping[str, Any]]
    await_callback: Callable[[Mapping[str, Any], float], Mapping[str, Any] | None]
    publish: Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    now: Callable[[], float] = time.time
    log: Callable[[LogEntry], None] = lambda entry: None


def builtin_environment(
    *,
    project_id: str,
    workflow_id: str,
    execution_id: str,
    location: str = "us-central1",
    project_number: str = "000000000000",
    revision_id: str = "000001-000",
    service_account_name: str | None = None,
) -> dict[str, str]:
    """The seven built-in variables every execution sees (local stand-in values)."""
    account = service_account_name or (
        f"projects/{project_id}/serviceAccounts/workflow@{project_id}.iam.gserviceaccount.com"
    )
    return {
        "GOOGLE_CLOUD_LOCATION": location,
        "GOOGLE_CLOUD_PROJECT_ID": project_id,
        "GOOGLE_CLOUD_PROJECT_NUMBER": project_number,
        "GOOGLE_CLOUD_SERVICE_ACCOUNT_NAME": account,
        "GOOGLE_CLOUD_WORKFLOW_EXECUTION_ID": execution_id,
        "GOOGLE_CLOUD_WORKFLOW_ID": workflow_id,
        "GOOGLE_CLOUD_WORKFLOW_REVISION_ID": revision_id,
    }
