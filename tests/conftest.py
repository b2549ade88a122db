"""Shared fixtures: every test runs against loopback fakes, never Google.

google-auth reads GCE_METADATA_HOST/IP when it is first imported, so the fake
metadata server's address is fixed here, before any test module imports it.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


METADATA_PORT = _free_port()
METADATA_HOST = f"127.0.0.1:{METADATA_PORT}"
os.environ["GCE_METADATA_HOST"] = METADATA_HOST
os.environ["GCE_METADATA_IP"] = METADATA_HOST
# No developer credentials may leak into a test: ADC must come from the fake.
os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
os.environ["CLOUDSDK_CONFIG"] = tempfile.mkdtemp(prefix="relay-tests-gcloud-")
for _name in ("WORKFLOWS_EMULATOR_HOST", "ALLOWED_WORKFLOWS", "GOOGLE_CLOUD_PROJECT"):
    os.environ.pop(_name, None)

from tests.fakes.metadata_server import FakeMetadataServer  # noqa: E402
from tests.fakes.workflows_api import FakeWorkflowsApi  # noqa: E402


@pytest.fixture(scope="session")
def metadata_server() -> Iterator[FakeMetadataServer]:
    with FakeMetadataServer(port=METADATA_PORT) as server:
        yield server


@pytest.fixture
def workflows_api(metadata_server: FakeMetadataServer) -> Iterator[FakeWorkflowsApi]:
    with FakeWorkflowsApi(token_validator=metadata_server.is_valid) as api:
        yield api


@pytest.fixture
def relay_env(
    workflows_api: FakeWorkflowsApi, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., None]:
    """Set the function's environment; call it again to override values."""

    def set_env(**values: Any) -> None:
        defaults = {
            "WORKFLOWS_EMULATOR_HOST": workflows_api.emulator_host,
            "CALLBACK_RETRY_DEADLINE_SECONDS": "2",
            "CALLBACK_CONNECT_TIMEOUT_SECONDS": "1",
            "CALLBACK_READ_TIMEOUT_SECONDS": "1",
        }
        for name, value in {**defaults, **values}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))

    set_env()
    return set_env
