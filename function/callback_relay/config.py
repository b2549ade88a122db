"""Relay configuration, read once from the environment and validated at start-up.

A bad value raises ``ConfigError`` at import of ``main`` so that a broken
deployment fails its first health check instead of dropping messages later.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from callback_relay import structured_log
from callback_relay.callback_url_policy import (
    LOCATION_PATTERN,
    PROJECT_PATTERN,
    RESOURCE_ID_PATTERN,
    WorkflowPattern,
)
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
# A realistic callback URL (project number, two generated ids) is about 250
# bytes: a smaller limit refuses every message.
MIN_MESSAGE_BYTES = 512
# Shorter than this, no call can be made: an attempt needs a token, a
# connection (a TLS handshake to googleapis.com takes tens of milliseconds) and
# an answer, and the first backoff alone is 0.25 s.
MIN_SECONDS = 0.1
LOG_LEVELS = tuple(structured_log.LEVELS)

# An entry has the grammar of the callback URL's own segments, or '*'.
_ALLOWED_WORKFLOW_RE = re.compile(
    rf"projects/(\*|{PROJECT_PATTERN})/locations/(\*|{LOCATION_PATTERN})"
    rf"/workflows/(\*|{RESOURCE_ID_PATTERN})"
)
_ENTRY_SHAPE_RE = re.compile(r"projects/([^/]+)/locations/([^/]+)/workflows/([^/]+)")
_ASCII_DIGITS_RE = re.compile(r"[0-9]+")
# A float as written in ASCII: float() also takes "١٢", "1_0" and "infinity".
_ASCII_NUMBER_RE = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

# Variables that point the relay, or google-auth, at local stand-ins of Google:
# read by the relay (config.py: WORKFLOWS_EMULATOR_HOST, and REQUESTS_CA_BUNDLE,
# the CA that replaces the system ones for a TLS fake) or by google-auth's
# metadata client (GCE_METADATA_HOST, its older name GCE_METADATA_ROOT, and
# GCE_METADATA_IP: google/auth/compute_engine/_metadata.py). Tests and local
# runs set them; a deployed relay must not, or its token goes to that host and
# every genuine callback URL is refused.
LOCAL_ONLY_VARIABLES = (
    "WORKFLOWS_EMULATOR_HOST",
    "REQUESTS_CA_BUNDLE",
    "GCE_METADATA_HOST",
    "GCE_METADATA_ROOT",
    "GCE_METADATA_IP",
)
# Set by Cloud Run in every container it runs: services (K_*), jobs and worker
# pools (CLOUD_RUN_*). Cloud Run functions are Cloud Run services.
# https://cloud.google.com/run/docs/container-contract#env-vars
CLOUD_RUN_VARIABLES = (
    "K_SERVICE",
    "K_REVISION",
    "K_CONFIGURATION",
    "CLOUD_RUN_JOB",
    "CLOUD_RUN_EXECUTION",
    "CLOUD_RUN_WORKER_POOL",
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


def _seconds(env: Mapping[str, str], name: str, default: float, maximum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _ASCII_NUMBER_RE.fullmatch(raw):
        raise ConfigError(f"{name}={raw!r} is not a number of seconds (ASCII digits, like 2.5)")
    value = float(raw)
    if value < MIN_SECONDS:
        raise ConfigError(f"{name}={raw!r} is under {MIN_SECONDS:g} s: no call fits in it")
    if value > maximum:
        raise ConfigError(f"{name}={raw!r} is over the maximum of {maximum:g} s")
    return value


def _whole_number(
    env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    # ASCII digits only: "²".isdigit() is true and int("²") raises ValueError.
    if not _ASCII_DIGITS_RE.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise ConfigError(f"{name}={raw!r} must be a whole number from {minimum} to {maximum}")
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
            raise ConfigError(f"ALLOWED_WORKFLOWS entry {entry!r} {_why_not(entry)}")
        project, location, workflow = (None if g == "*" else g for g in match.groups())
        patterns.append(WorkflowPattern(project, location, workflow))
    if raw.strip() and not patterns:
        raise ConfigError("ALLOWED_WORKFLOWS is set but holds no entry")
    return tuple(patterns)


def _why_not(entry: str) -> str:
    """Why an ALLOWED_WORKFLOWS entry can never match a callback URL."""
    shape = _ENTRY_SHAPE_RE.fullmatch(entry)
    if shape is None:
        return "is not projects/PROJECT/locations/LOCATION/workflows/WORKFLOW ('*' for a segment)"
    project, location, _workflow = shape.groups()
    if ":" in project or "." in project:
        return (
            f"names the domain-scoped project id {project!r}. Google does not document that a"
            " callback URL can carry one (a ':' or '.' in it is refused by the URL policy):"
            " name the project by its number instead (gcloud projects describe"
            f" {project} --format='value(projectNumber)')"
        )
    if project != "*" and project.lower() != project:
        return f"can never match: project {project!r} has upper-case letters; ids are lower case"
    if location != "*" and location.lower() != location:
        return f"can never match: location {location!r} has upper-case letters (us-central1)"
    return (
        "can never match a callback URL: projects are lower-case ids or numbers, locations"
        " lower-case names, workflows letters, digits, '-' and '_' (at most 128); '*' for a segment"
    )


def parse_emulator_host(raw: str) -> str:
    match = _EMULATOR_HOST_RE.fullmatch(raw.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConfigError(
            f"WORKFLOWS_EMULATOR_HOST={raw!r} must be host:port (plain HTTP) or https://host:port"
        )
    scheme = match["scheme"] or "http://"
    return f"{scheme}{match['host']}:{int(match['port'])}"


def refuse_local_hooks_on_cloud_run(env: Mapping[str, str]) -> None:
    """ConfigError when a variable for local stand-ins is set where Cloud Run runs the relay."""
    platform = [name for name in CLOUD_RUN_VARIABLES if env.get(name, "").strip()]
    hooks = [name for name in LOCAL_ONLY_VARIABLES if env.get(name, "").strip()]
    if platform and hooks:
        raise ConfigError(
            f"{', '.join(hooks)} set on Cloud Run ({platform[0]}={env[platform[0]].strip()!r}):"
            " these point the relay and its token at local stand-ins of Google, for local runs"
            " and tests only. Unset them in the deployment (gcloud functions deploy"
            f" --remove-env-vars={','.join(hooks)})"
        )


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build Settings from an environment mapping, or raise ConfigError."""
    refuse_local_hooks_on_cloud_run(env)
    retry_deadline = _seconds(
        env, "CALLBACK_RETRY_DEADLINE_SECONDS", DEFAULT_RETRY_DEADLINE_SECONDS, 3600
    )
    connect_timeout = _seconds(
        env, "CALLBACK_CONNECT_TIMEOUT_SECONDS", DEFAULT_CONNECT_TIMEOUT_SECONDS, 300
    )
    read_timeout = _seconds(env, "CALLBACK_READ_TIMEOUT_SECONDS", DEFAULT_READ_TIMEOUT_SECONDS, 300)
    log_level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={log_level!r} must be one of {', '.join(LOG_LEVELS)}")
    emulator_raw = env.get("WORKFLOWS_EMULATOR_HOST", "").strip()
    # functions-framework's gunicorn runs THREADS threads (default CPUs x 4);
    # one pooled connection per thread avoids reconnects under load.
    threads = _whole_number(env, "THREADS", (os.cpu_count() or 1) * 4, 1, 1000)
    return Settings(
        allowed_workflows=parse_allowed_workflows(env.get("ALLOWED_WORKFLOWS", "")),
        emulator_origin=parse_emulator_host(emulator_raw) if emulator_raw else None,
        retry_deadline_seconds=retry_deadline,
        connect_timeout_seconds=connect_timeout,
        read_timeout_seconds=read_timeout,
        max_message_bytes=_whole_number(
            env,
            "MAX_MESSAGE_BYTES",
            DEFAULT_MAX_MESSAGE_BYTES,
            MIN_MESSAGE_BYTES,
            MAX_MESSAGE_BYTES_LIMIT,
        ),
        fail_fast_invalid_messages=_flag(env, "FAIL_FAST_INVALID_MESSAGES", True),
        log_level=log_level,
        trace_project=env.get("GOOGLE_CLOUD_PROJECT", "").strip() or None,
        http_pool_size=max(threads, 4),
        ca_bundle=env.get("REQUESTS_CA_BUNDLE", "").strip() or None,
        keyed=load_keyed_settings(env),
    )
