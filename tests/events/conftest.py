from __future__ import annotations

import pytest

from harness.fake_workflows_api import FakeWorkflowsApi
from harness.firestore_emulator import FirestoreEmulator
from tests.events.keyed_relay import KeyedRelay, keyed_relay


@pytest.fixture
def keyed(
    monkeypatch: pytest.MonkeyPatch, workflows_api: FakeWorkflowsApi, firestore: FirestoreEmulator
) -> KeyedRelay:
    """A relay with keyed waits on, its own Firestore database, the fake Workflows API."""
    return keyed_relay(monkeypatch, workflows_api, firestore)
