"""Importing the function: fast, offline, and strict about its configuration."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("network use at import")
socket.socket.connect = refuse
socket.create_connection = refuse
sys.path.insert(0, "function")
import main
heavy = sorted(
    m for m in sys.modules if m.startswith(("google.cloud.pubsub", "grpc", "google.api_core"))
)
print("HEAVY", heavy)
"""


def run_import(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"WORKFLOWS_EMULATOR_HOST"}}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_touches_no_network_and_no_pubsub_client() -> None:
    result = run_import()
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_bad_configuration_fails_at_import_with_a_clear_message() -> None:
    result = run_import(CALLBACK_RETRY_DEADLINE_SECONDS="soon")
    assert result.returncode != 0
    assert "ConfigError: CALLBACK_RETRY_DEADLINE_SECONDS='soon' is not a number" in result.stderr
