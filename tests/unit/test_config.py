from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callback_relay.callback_url_policy import GOOGLE_ORIGIN, CallbackUrlPolicy, WorkflowPattern
from callback_relay.config import (
    MAX_MESSAGE_BYTES_LIMIT,
    MIN_MESSAGE_BYTES,
    MIN_SECONDS,
    load_settings,
    parse_allowed_workflows,
)
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


# -- issue 17, item 7: accepted means workable ----------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLBACK_RETRY_DEADLINE_SECONDS", "0.000001"),  # every message redelivered, no call
        ("CALLBACK_RETRY_DEADLINE_SECONDS", "0.09"),
        ("CALLBACK_CONNECT_TIMEOUT_SECONDS", "0.0001"),
        ("CALLBACK_READ_TIMEOUT_SECONDS", "1e-9"),
        ("MAX_MESSAGE_BYTES", "1"),
        ("MAX_MESSAGE_BYTES", str(MIN_MESSAGE_BYTES - 1)),
        ("THREADS", "0"),
    ],
)
def test_values_too_small_to_ever_work_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize(
    ("name", "largest", "too_large"),
    [
        ("CALLBACK_RETRY_DEADLINE_SECONDS", "3600", "3600.01"),
        ("CALLBACK_CONNECT_TIMEOUT_SECONDS", "300", "300.5"),
        ("CALLBACK_READ_TIMEOUT_SECONDS", "300", "301"),
        ("MAX_MESSAGE_BYTES", str(MAX_MESSAGE_BYTES_LIMIT), str(MAX_MESSAGE_BYTES_LIMIT + 1)),
        ("THREADS", "1000", "1001"),
    ],
)
def test_upper_bounds_are_inclusive(name: str, largest: str, too_large: str) -> None:
    load_settings({name: largest})
    with pytest.raises(ConfigError, match=name):
        load_settings({name: too_large})


def test_the_smallest_values_that_work_are_accepted() -> None:
    settings = load_settings(
        {
            "CALLBACK_RETRY_DEADLINE_SECONDS": str(MIN_SECONDS),
            "CALLBACK_CONNECT_TIMEOUT_SECONDS": ".1",
            "CALLBACK_READ_TIMEOUT_SECONDS": "1e-1",
            "MAX_MESSAGE_BYTES": str(MIN_MESSAGE_BYTES),
            "THREADS": "1",
        }
    )
    assert settings.retry_deadline_seconds == settings.read_timeout_seconds == 0.1
    assert (settings.max_message_bytes, settings.http_pool_size) == (MIN_MESSAGE_BYTES, 4)


NUMBERS = ["THREADS", "MAX_MESSAGE_BYTES", "CALLBACK_RETRY_DEADLINE_SECONDS"]
# Superscript two, Arabic-Indic three, fullwidth twelve, and what int()/float() also take.
NOT_ASCII_NUMBERS = ["\u00b2", "\u0663", "\uff11\uff12", "1_000", "+8", "infinity", "8 8", "0x10"]


@pytest.mark.parametrize("name", NUMBERS)
@pytest.mark.parametrize("value", NOT_ASCII_NUMBERS)
def test_numbers_are_ascii_digits_and_a_config_error_never_a_value_error(
    name: str, value: str
) -> None:
    # "\u00b2".isdigit() is true and int() of it raises ValueError; float("\u0663") is 3.0.
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("projects/p/locations/US-CENTRAL1/workflows/w", "location 'US-CENTRAL1' has upper-case"),
        ("projects/My-Project/locations/l/workflows/w", "project 'My-Project' has upper-case"),
        ("projects/Prod/locations/l/workflows/w", "project 'Prod' has upper-case"),
        ("projects/example.com:p/locations/l/workflows/w", "domain-scoped project id"),
        ("projects/p/locations/l/workflows/w.v2", "can never match a callback URL"),
        ("projects/-p/locations/l/workflows/w", "can never match a callback URL"),
        ("projects/p/locations/1l/workflows/w", "can never match a callback URL"),
        ("projects/p/locations/l/workflows/" + "w" * 129, "can never match a callback URL"),
        ("projects/p/locations/l/workflows/*/", "is not projects/PROJECT"),
    ],
)
def test_allowed_workflows_entries_that_can_never_match_are_refused(entry: str, says: str) -> None:
    with pytest.raises(ConfigError, match="ALLOWED_WORKFLOWS") as caught:
        parse_allowed_workflows(entry)
    assert says in str(caught.value)


# Segments that are, or are one character away from, what a callback URL can hold.
segments = st.just("*") | st.from_regex(r"[aZ0_.:\-][a-zZ0-9_.:\-]{0,5}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(st.tuples(segments, segments, segments))
def test_every_accepted_entry_matches_some_callback_url(segments: tuple[str, str, str]) -> None:
    entry = "projects/{}/locations/{}/workflows/{}".format(*segments)
    try:
        (pattern,) = parse_allowed_workflows(entry)
    except ConfigError:
        return
    project, location, workflow = (
        "p" if s == "*" else s for s in (segments[0], segments[1], segments[2])
    )
    url = (
        f"{GOOGLE_ORIGIN}/v1/projects/{project}/locations/{location}"
        f"/workflows/{workflow}/executions/e/callbacks/c"
    )
    CallbackUrlPolicy(allowed_workflows=(pattern,)).check(url)  # never refused


LOCAL_ENV = {
    "WORKFLOWS_EMULATOR_HOST": "127.0.0.1:8089",
    "REQUESTS_CA_BUNDLE": "/tmp/ca.pem",
    "GCE_METADATA_HOST": "127.0.0.1:8080",
    "GCE_METADATA_ROOT": "127.0.0.1:8080",
    "GCE_METADATA_IP": "127.0.0.1:8080",
}
CLOUD_RUN_ENV = {
    "K_SERVICE": "relay",
    "K_REVISION": "relay-00001-abc",
    "K_CONFIGURATION": "relay",
    "CLOUD_RUN_JOB": "job",
    "CLOUD_RUN_EXECUTION": "job-x",
    "CLOUD_RUN_WORKER_POOL": "pool",
}


@pytest.mark.parametrize("hook", sorted(LOCAL_ENV))
@pytest.mark.parametrize("platform", sorted(CLOUD_RUN_ENV))
def test_a_local_hook_on_cloud_run_stops_the_relay(hook: str, platform: str) -> None:
    env = {hook: LOCAL_ENV[hook], platform: CLOUD_RUN_ENV[platform]}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert hook in str(caught.value)
    assert platform in str(caught.value)


def test_local_runs_and_plain_cloud_run_both_start() -> None:
    assert load_settings(LOCAL_ENV).emulator_origin == "http://127.0.0.1:8089"
    assert load_settings(CLOUD_RUN_ENV).emulator_origin is None
    # Empty values are unset values, as everywhere else in the configuration.
    load_settings({**CLOUD_RUN_ENV, "WORKFLOWS_EMULATOR_HOST": " "})
