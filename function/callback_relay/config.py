"""Relay configuration, read once from the environment and validated at start-up.

A bad value raises ``ConfigError`` at import of ``main`` so that a broken
deployment fails its first health check instead of dropping messages later.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping

from callback_relay import structured_log
from callback_relay.callback_url_policy import WorkflowPattern
from callback_relay.errors import ConfigError
from callback_relay.keyed_settings import KeyedSettings, load_keyed_settings

DEFAULT_RETRY_DEADLINE_SECONDS = 30.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_READ_TIMEOUT_SECONDS = 15.0
# Workflows holds at most 512 KB of variables per execution, so a resume body
# far below that is the useful range. 64 KiB also keeps a rejected message,
# base64-encoded, inside one Cloud Logging entry (256 KB) for replay.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
MAX_MESSAGE_BYTES_LIMIT = 160 * 1024
LOG_LEVELS = tuple(structured_log.LEVELS)

_WORKFLOW_SEGMENT = r"(?:\*|[A-Za-z0-9][A-Za-z0-9_-]{0,127})"
_ALLOWED_WORKFLOW_RE = re.compile(
    rf"projects/({_WORKFLOW_SEGMENT})/locations/({_WORKFLOW_SEGMENT})"
    rf"/workflows/({_WORKFLOW_SEGMENT})"
)
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_EMULATOR_HOST_RE = re.compile(
    r"(?P<scheme>https?://)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})"
)


@dataclasses.dataclass(frozen=True)
class Settings:
    allowed_workflows: tuple[WorkflowPattern, ...] = ()
    # Origin that replaces https://workflowexecutions.googleapis.com; local use only.
    emulator_origin: str | None = None
    retry_deadline_seconds: float = DEFAULT_RETRY_DEADLINE_SECONDS
    connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # Resume the callback of a message that breaks the contract with an error, so
    # the waiting step fails at once instead of timing out hours later.
    fail_fast_invalid_messages: bool = True
    log_level: str = "INFO"
    # Project for `logging.googleapis.com/trace`; falls back to the event's project.
    trace_project: str | None = None
    # Size of the HTTP connection pool; matches the thread count of the server.
    http_pool_size: int = 8
    # REQUESTS_CA_BUNDLE: the callback session ignores the environment, so pass it on.
    ca_bundle: str | None = None
    # Keyed waits (EVENT_STORE, docs/events.md); None when off.
    keyed: KeyedSettings | None = None


def _positive_float(env: Mapping[str, str], name: str, default: float, maximum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > maximum:
        raise ConfigError(f"{name}={raw!r} must be greater than 0 and at most {maximum:g}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= maximum:
        raise ConfigError(f"{name}={raw!r} must be a whole number from 1 to {maximum}")
    return int(raw)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} must be one of {', '.join(_TRUE + _FALSE)}")


def parse_allowed_workflows(raw: str) -> tuple[WorkflowPattern, ...]:
    patterns: list[WorkflowPattern] = []
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        match = _ALLOWED_WORKFLOW_RE.fullmatch(entry)
        if match is None:
            raise ConfigError(
                f"ALLOWED_WORKFLOWS entry {entry!r} is not "
                "projects/PROJECT/locations/LOCATION/workflows/WORKFLOW ('*' for a whole segment)"
            )
        project, location, workflow = (None if g == "*" else g for g in match.groups())
        patterns.append(WorkflowPattern(project, location, workflow))
    if raw.strip() and not patterns:
        raise ConfigError("ALLOWED_WORKFLOWS is set but holds no entry")
    return tuple(patterns)


def parse_emulator_host(raw: str) -> str:
    match = _EMULATOR_HOST_RE.fullmatch(raw.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConfigError(
            f"WORKFLOWS_EMULATOR_HOST={raw!r} must be host:port (plain HTTP) or https://host:port"
        )
    scheme = match["scheme"] or "http://"
    return f"{scheme}{match['host']}:{int(match['port'])}"


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build Settings from an environment mapping, or raise ConfigError."""
    retry_deadline = _positive_float(
        env, "CALLBACK_RETRY_DEADLINE_SECONDS", DEFAULT_RETRY_DEADLINE_SECONDS, 3600
    )
    connect_timeout = _positive_float(
        env, "CALLBACK_CONNECT_TIMEOUT_SECONDS", DEFAULT_CONNECT_TIMEOUT_SECONDS, 300
    )
    read_timeout = _positive_float(
        env, "CALLBACK_READ_TIMEOUT_SECONDS", DEFAULT_READ_TIMEOUT_SECONDS, 300
    )
    log_level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={log_level!r} must be one of {', '.join(LOG_LEVELS)}")
    emulator_raw = env.get("WORKFLOWS_EMULATOR_HOST", "").strip()
    # functions-framework's gunicorn runs THREADS threads (default CPUs x 4);
    # one pooled connection per thread avoids reconnects under load.
    threads = _positive_int(env, "THREADS", (os.cpu_count() or 1) * 4, 1000)
    return Settings(
        allowed_workflows=parse_allowed_workflows(env.get("ALLOWED_WORKFLOWS", "")),
        emulator_origin=parse_emulator_host(emulator_raw) if emulator_raw else None,
        retry_deadline_seconds=retry_deadline,
        connect_timeout_seconds=connect_timeout,
        read_timeout_seconds=read_timeout,
        max_message_bytes=_positive_int(
            env, "MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES_LIMIT
        ),
        fail_fast_invalid_messages=_flag(env, "FAIL_FAST_INVALID_MESSAGES", True),
        log_level=log_level,
        trace_project=env.get("GOOGLE_CLOUD_PROJECT", "").strip() or None,
        http_pool_size=max(threads, 4),
        ca_bundle=env.get("REQUESTS_CA_BUNDLE", "").strip() or None,
        keyed=load_keyed_settings(env),
    )
