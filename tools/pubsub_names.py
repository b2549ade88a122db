"""Pub/Sub resource names as operators type them: a short id, or the full name."""

from __future__ import annotations

import os
from collections.abc import Mapping

# Where a short id's project comes from when --project is not given: the emulator's
# variable first, then the ones Google's tools set.
PROJECT_ENV_VARS = ("PUBSUB_PROJECT_ID", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")


def default_project(flag: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """--project, else the first of PROJECT_ENV_VARS that is set."""
    return flag or next((env[name] for name in PROJECT_ENV_VARS if env.get(name)), None)


def resource_path(kind: str, name: str, project: str | None) -> str:
    """projects/P/<kind>/<name> from a short id, or the full name unchanged."""
    if name.startswith("projects/"):
        parts = name.split("/")
        if len(parts) != 4 or parts[2] != kind or not parts[1] or not parts[3]:
            raise ValueError(f"{name!r} is not projects/PROJECT/{kind}/NAME")
        return name
    if not name or "/" in name:
        raise ValueError(f"{name!r} is not a {kind[:-1]} id")
    if not project:
        raise ValueError(
            f"{kind[:-1]} {name!r} needs a project: pass --project or set one of"
            f" {', '.join(PROJECT_ENV_VARS)}"
        )
    return f"projects/{project}/{kind}/{name}"
