"""tools.publish checks a message with the relay's own parser, URL policy and environment."""

from __future__ import annotations

import datetime
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callback_relay.message import parse_message_data
from tools import publish as publish_tool

REPO = Path(__file__).resolve().parents[2]
URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/p/locations/us-central1"
    "/workflows/w/executions/e/callbacks/c"
)
FUTURE = "2099-01-01T00:00:00Z"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = publish_tool.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def dry_run_data(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, data: object
) -> tuple[int, str, str]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    return run(capsys, "--message-file", "-", "--dry-run")


def test_dry_run_prints_a_message_the_relay_parses(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "--url", URL, "--payload", '{"n": 1, "name": "é"}', "--expires-in", "60",
        "--dry-run",
    )  # fmt: skip

    assert code == 0, err
    assert "ok: the relay would call POST projects/p/locations/us-central1/workflows/w" in err
    data = out.strip().encode()
    assert json.loads(data)["payload"] == {"n": 1, "name": "é"}
    assert parse_message_data(data, 65536).body == '{"n":1,"name":"é"}'.encode()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"callbackUrl": URL, "payload": {}}, "unknown field(s): 'callbackUrl'"),
        ({"callback_url": URL, "payloa": {}}, "unknown field(s): 'payloa'"),
        ({"callback_url": URL, "result": 1}, "message_rejected (unknown_field)"),
        ({"callback_url": URL, "method": "post"}, "(invalid_method)"),
        ({"callback_url": URL, "method": "GET", "payload": {"a": 1}}, "(payload_not_allowed)"),
        ({"callback_url": URL, "expires_at": "tomorrow"}, "(invalid_expires_at)"),
        ({"callback_url": URL, "expires_at": "2001-01-01T00:00:00Z"}, "expired (expired)"),
        ({"callback_url": "https://example.com/cb"}, "url_refused (wrong_origin)"),
        ({"callback_url": URL + "?x=1"}, "url_refused (forbidden_characters)"),
        ({"callback_url": URL.replace("/callbacks/", "/other/")}, "url_refused (wrong_path)"),
        (b"\xff", "(not_utf8)"),
    ],
)
def test_dry_run_refuses_what_the_relay_refuses(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    message: object,
    expected: str,
) -> None:
    code, out, err = dry_run_data(capsys, monkeypatch, message)

    assert code == publish_tool.EXIT_REFUSED
    assert "the relay would refuse this message: " in err
    assert expected in err
    assert out == ""


def test_allowed_workflows_is_honoured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    message = {"callback_url": URL, "payload": {}, "expires_at": FUTURE}
    monkeypatch.setenv("ALLOWED_WORKFLOWS", "projects/p/locations/*/workflows/other")
    code, _, err = dry_run_data(capsys, monkeypatch, message)
    assert code == publish_tool.EXIT_REFUSED
    assert "workflow_not_allowed" in err

    monkeypatch.setenv("ALLOWED_WORKFLOWS", "projects/p/locations/*/workflows/w")
    code, _, err = dry_run_data(capsys, monkeypatch, message)
    assert code == 0, err


def test_workflows_emulator_host_changes_the_accepted_origin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    local = URL.replace("https://workflowexecutions.googleapis.com", "http://127.0.0.1:8089")
    monkeypatch.setenv("WORKFLOWS_EMULATOR_HOST", "127.0.0.1:8089")

    code, _, err = dry_run_data(capsys, monkeypatch, {"callback_url": local})
    assert code == 0, err
    code, _, err = dry_run_data(capsys, monkeypatch, {"callback_url": URL})
    assert code == publish_tool.EXIT_REFUSED
    assert "must start with http://127.0.0.1:8089/" in err


def test_max_message_bytes_is_honoured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_MESSAGE_BYTES", "600")  # the relay's smallest is 512
    code, _, err = dry_run_data(capsys, monkeypatch, {"callback_url": URL, "payload": "x" * 700})
    assert code == publish_tool.EXIT_REFUSED
    assert "(too_large)" in err


def test_a_broken_relay_environment_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_WORKFLOWS", "my-workflow")
    code, _, err = dry_run_data(capsys, monkeypatch, {"callback_url": URL})
    assert code == publish_tool.EXIT_USAGE
    assert "the relay's environment is invalid: ALLOWED_WORKFLOWS entry 'my-workflow'" in err


def test_a_refused_message_is_not_published(capsys: pytest.CaptureFixture[str]) -> None:
    # No emulator or credentials here: reaching the publish would fail with exit 1, not 3.
    code, _, err = run(capsys, "--topic", "projects/p/topics/t", "--url", "https://x/cb")
    assert code == publish_tool.EXIT_REFUSED
    assert "not published" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--dry-run"], "one of --url or --message-file is required"),
        (["--url", URL], "--topic is required to publish"),
        (["--url", URL, "--payload", "{", "--dry-run"], "--payload is not JSON"),
        (["--url", URL, "--expires-in", "0", "--dry-run"], "--expires-in must be positive"),
        (["--message-file", "-", "--url", URL, "--dry-run"], "--message-file replaces"),
        (["--url", URL, "--topic", "a/b"], "'a/b' is not a topic id"),
        (["--url", URL, "--dry-run", "--attribute", "novalue"], "is not KEY=VALUE"),
        (["--url", URL, "--dry-run", "--attribute", "=value"], "is not KEY=VALUE"),
        (["--url", URL, "--topic", "t", "--timeout", "0"], "--timeout must be a positive"),
        (["--url", URL, "--topic", "t", "--timeout", "nan"], "--timeout must be a positive"),
    ],
)
def test_usage_errors_say_why(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == publish_tool.EXIT_USAGE
    assert expected in err


def test_build_message_keeps_the_schema_field_order() -> None:
    now = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    message = publish_tool.build_message(URL, {"a": 1}, "PUT", 10, now, metadata={"job": "7"})
    assert list(message) == ["callback_url", "payload", "method", "expires_at", "metadata"]
    assert message["expires_at"] == "2030-01-02T03:04:15.000000Z"


def test_runs_as_a_module_from_the_repository_root() -> None:
    # The CLI must find function/callback_relay without PYTHONPATH (tools/__init__.py).
    result = subprocess.run(
        [sys.executable, "-m", "tools.publish", "--url", URL, "--dry-run"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["callback_url"] == URL


@pytest.mark.parametrize(
    ("message", "fails_fast"),
    [
        ({"callback_url": URL, "method": "post"}, True),  # a case typo: the callback takes it
        ({"callback_url": URL, "payloa": {}}, True),
        ({"callback_url": URL, "expires_at": "tomorrow"}, True),
        ({"callback_url": URL, "method": "PUT", "colour": "red"}, True),
        ({"callbackUrl": URL, "payload": {}}, False),  # no callback to tell
        ({"callback_url": URL, "method": "GET", "payload": 1}, False),  # nothing carries it
        ({"callback_url": URL, "method": "FETCH"}, False),
        ({"callback_url": "https://example.com/cb", "payloa": 1}, False),  # never called
        ({"callback_url": "https://example.com/cb"}, False),
        ({"callback_url": URL, "expires_at": "2000-01-01T00:00:00Z"}, False),  # expired
        (b"not json", False),
    ],
)
def test_each_refusal_says_what_the_waiting_step_sees(
    message: object,
    fails_fast: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = dry_run_data(capsys, monkeypatch, message)
    assert code == publish_tool.EXIT_REFUSED
    said = publish_tool.FAILS_FAST if fails_fast else publish_tool.WAITS
    other = publish_tool.WAITS if fails_fast else publish_tool.FAILS_FAST
    assert said in err
    assert other not in err


def test_the_waiting_step_verdict_follows_the_relays_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = {"callback_url": URL, "payloa": {}}
    monkeypatch.setenv("FAIL_FAST_INVALID_MESSAGES", "false")
    assert publish_tool.WAITS in dry_run_data(capsys, monkeypatch, broken)[2]
    monkeypatch.delenv("FAIL_FAST_INVALID_MESSAGES")
    monkeypatch.setenv("ALLOWED_WORKFLOWS", "projects/p/locations/*/workflows/other")
    assert publish_tool.WAITS in dry_run_data(capsys, monkeypatch, broken)[2]
    monkeypatch.setenv("ALLOWED_WORKFLOWS", "projects/p/locations/*/workflows/w")
    assert publish_tool.FAILS_FAST in dry_run_data(capsys, monkeypatch, broken)[2]


def test_a_local_url_refused_by_origin_names_workflows_emulator_host(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    local = URL.replace("https://workflowexecutions.googleapis.com", "http://127.0.0.1:8089")
    code, _, err = dry_run_data(capsys, monkeypatch, {"callback_url": local})
    assert code == publish_tool.EXIT_REFUSED
    assert "WORKFLOWS_EMULATOR_HOST" in err


def _api_error(name: str) -> Exception:
    from google.api_core import exceptions as api_exceptions

    error: Exception = getattr(api_exceptions, name)("injected")
    return error


@pytest.mark.parametrize(
    ("error", "maybe"),
    [
        # The service refused the request: nothing was published (exit 1).
        ("NotFound", False),
        ("PermissionDenied", False),
        ("Unauthenticated", False),
        ("InvalidArgument", False),
        ("FailedPrecondition", False),
        ("MethodNotImplemented", False),
        # The request may have been applied before the error (exit 4).
        ("DeadlineExceeded", True),
        ("ServiceUnavailable", True),
        ("InternalServerError", True),
        ("Unknown", True),
        ("Aborted", True),
        ("Cancelled", True),
    ],
)
def test_which_errors_may_have_published(error: str, maybe: bool) -> None:
    assert publish_tool.may_have_been_published(_api_error(error)) is maybe


def test_no_credentials_never_published_and_an_unknown_error_may_have() -> None:
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    no_credentials = auth_exceptions.DefaultCredentialsError("no ADC")  # type: ignore[no-untyped-call]
    assert publish_tool.may_have_been_published(no_credentials) is False
    retried_out = api_exceptions.RetryError("Timeout of 1.0s exceeded", None)  # type: ignore[no-untyped-call]
    assert publish_tool.may_have_been_published(retried_out) is True
    assert publish_tool.may_have_been_published(RuntimeError("a bug")) is True


def test_the_printed_message_is_the_json_value_or_the_shorthand_s_text() -> None:
    assert publish_tool.printed_message(b'{"callback_url": "u"}') == {"callback_url": "u"}
    assert publish_tool.printed_message(URL.encode() + b"\n") == URL + "\n"


def test_every_exit_code_is_in_the_help_and_the_producer_guide() -> None:
    codes = {
        value
        for name, value in vars(publish_tool).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }
    assert codes == {0, 1, 2, 3, 4}
    description = publish_tool.make_parser().description or ""
    guide = (REPO / "docs" / "producers.md").read_text(encoding="utf-8")
    section = guide.split("### Exit codes of `python -m tools.publish`")[1].split("\n#")[0]
    rows = set(re.findall(r"^\| (\d) \|", section, re.M))
    assert rows == {str(code) for code in codes}
    for code in codes:
        assert f"{code} " in description, code
