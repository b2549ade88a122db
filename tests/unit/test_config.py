from __future__ import annotations

import pytest

from callback_relay.callback_url_policy import WorkflowPattern
from callback_relay.config import load_settings
from callback_relay.errors import ConfigError


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.allowed_workflows == ()
    assert settings.emulator_origin is None
    assert settings.retry_deadline_seconds == 30
    assert (settings.connect_timeout_seconds, settings.read_timeout_seconds) == (5, 15)
    assert settings.max_message_bytes == 65536
    assert settings.log_level == "INFO"


def test_values_are_read() -> None:
    settings = load_settings(
        {
            "ALLOWED_WORKFLOWS": (
                " projects/p/locations/*/workflows/w ,projects/*/locations/l/workflows/*"
            ),
            "WORKFLOWS_EMULATOR_HOST": "127.0.0.1:8089",
            "CALLBACK_RETRY_DEADLINE_SECONDS": "12.5",
            "MAX_MESSAGE_BYTES": "1024",
            "LOG_LEVEL": "debug",
            "GOOGLE_CLOUD_PROJECT": "proj",
            "THREADS": "32",
        }
    )
    assert settings.allowed_workflows == (
        WorkflowPattern("p", None, "w"),
        WorkflowPattern(None, "l", None),
    )
    assert settings.emulator_origin == "http://127.0.0.1:8089"
    assert settings.retry_deadline_seconds == 12.5
    assert settings.max_message_bytes == 1024
    assert settings.log_level == "DEBUG"
    assert settings.trace_project == "proj"
    assert settings.http_pool_size == 32


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("localhost:9000", "http://localhost:9000"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("https://127.0.0.1:9443", "https://127.0.0.1:9443"),
        ("[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_emulator_host_forms(host: str, origin: str) -> None:
    assert load_settings({"WORKFLOWS_EMULATOR_HOST": host}).emulator_origin == origin


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLBACK_RETRY_DEADLINE_SECONDS", "abc"),
        ("CALLBACK_RETRY_DEADLINE_SECONDS", "0"),
        ("CALLBACK_RETRY_DEADLINE_SECONDS", "-1"),
        ("CALLBACK_RETRY_DEADLINE_SECONDS", "nan"),
        ("CALLBACK_RETRY_DEADLINE_SECONDS", "inf"),
        ("CALLBACK_READ_TIMEOUT_SECONDS", "1e9"),
        ("MAX_MESSAGE_BYTES", "1.5"),
        ("MAX_MESSAGE_BYTES", "0"),
        ("MAX_MESSAGE_BYTES", "10000000"),
        ("LOG_LEVEL", "LOUD"),
        ("WORKFLOWS_EMULATOR_HOST", "127.0.0.1"),
        ("WORKFLOWS_EMULATOR_HOST", "ftp://127.0.0.1:21"),
        ("WORKFLOWS_EMULATOR_HOST", "127.0.0.1:99999"),
        ("WORKFLOWS_EMULATOR_HOST", "user@127.0.0.1:80"),
        ("ALLOWED_WORKFLOWS", "my-workflow"),
        ("ALLOWED_WORKFLOWS", "projects/p/locations/l/workflows/w/extra"),
        ("ALLOWED_WORKFLOWS", ","),
        ("THREADS", "many"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize(
    ("raw", "value"),
    [("", True), ("true", True), ("ON", True), ("1", True), ("false", False), (" no ", False)],
)
def test_fail_fast_flag(raw: str, value: bool) -> None:
    settings = load_settings({"FAIL_FAST_INVALID_MESSAGES": raw})
    assert settings.fail_fast_invalid_messages is value


def test_fail_fast_is_on_by_default_and_checked() -> None:
    assert load_settings({}).fail_fast_invalid_messages is True
    with pytest.raises(ConfigError, match="FAIL_FAST_INVALID_MESSAGES"):
        load_settings({"FAIL_FAST_INVALID_MESSAGES": "maybe"})
