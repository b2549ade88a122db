"""docs/producers.md, "What happens on each mistake": the table walked row by row.

Each row's "The waiting step" column says what the step sees; that text decides what this
test expects (fails fast, waits until its timeout, resumes once, or receives an error
body). Each row the relay can see has examples, sent to the relay as Eventarc delivers
them (functions-framework serving the function), with callbacks on the fake Workflows API.
A row without examples, or examples for a row the doc no longer has, fails the test.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from harness.attacker_server import AttackerServer
from harness.fake_workflows_api import FakeWorkflowsApi
from tests.doc_blocks import REPO
from tests.system.test_function_app import log_lines, make_client, send_binary

GUIDE = REPO / "docs" / "producers.md"
HEADER = "| Mistake | The relay | The waiting step |"


def mistake_table() -> dict[str, tuple[str, str]]:
    """Mistake -> (what the relay does, what the waiting step sees), as the doc says."""
    text = GUIDE.read_text(encoding="utf-8")
    rows = text.split(HEADER, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]
    table = {}
    for row in rows:
        mistake, relay, step = (cell.strip() for cell in row.strip().strip("|").split(" | "))
        table[mistake] = (relay, step)
    return table


def expectation(step: str) -> str:
    """What the waiting step's cell promises, in one word."""
    if step.startswith("`CallbackError` `INVALID_MESSAGE`, within seconds"):
        return "fails_fast"
    if step.startswith(("Waits until its timeout", "Already ended with `CallbackTimeout`")):
        return "waits"
    if step.startswith("Nothing changes: it resumes once"):
        return "resumes_once"
    if step.startswith("`CallbackError`: the step reads it as a failure"):
        return "error_delivered"
    raise AssertionError(f"a waiting-step cell this test does not know: {step!r}")


@dataclasses.dataclass(frozen=True)
class Example:
    """One message for a row: `data(url)` is what the producer publishes."""

    name: str
    data: Callable[[str], bytes]
    method: str = "POST"  # the callback's own method
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    execution_ended: bool = False
    times: int = 1  # how often it is published


def fields(**values: Any) -> Callable[[str], bytes]:
    return lambda url: json.dumps({"callback_url": url, **values}).encode()


PAST = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)).isoformat()
EXAMPLES: dict[str, list[Example]] = {
    "Unknown field or typo in a field name other than `callback_url`": [
        Example("payloa", fields(payloa={"ok": True})),
        Example("extra result", fields(payload={}, result=42)),
    ],
    "`method` in the wrong case": [
        Example("post", fields(method="post", payload={"ok": True})),
        Example("Put on a PUT callback", fields(method="Put"), method="PUT"),
    ],
    "A wrong value or type in `payload`, `expires_at` or `metadata`": [
        Example("expires_at not RFC 3339", fields(expires_at="tomorrow")),
        Example("expires_at in year 0000", fields(expires_at="0000-01-01T00:00:00Z")),
        Example("expires_at a number", fields(expires_at=5)),
        Example("metadata a list", fields(metadata=["job", 1])),
        Example(
            "NaN in payload", lambda url: f'{{"callback_url": "{url}", "payload": NaN}}'.encode()
        ),
    ],
    "A `method` that is no callback method": [
        Example("FETCH", fields(method="FETCH")),
        Example("payload on GET", fields(method="GET", payload={"a": 1}), method="GET"),
        Example("typo for HEAD", fields(method="HEAD", colour="red"), method="HEAD"),
        Example("typo for DELETE", fields(method="DELETE", colour="red"), method="DELETE"),
        Example("typo for OPTIONS", fields(method="OPTIONS", colour="red"), method="OPTIONS"),
    ],
    "No callback URL it can read": [
        Example("not JSON", lambda url: b"{" + url.encode()),
        Example("not UTF-8", lambda url: b'{"callback_url": "' + url.encode() + b'\xff"}'),
        Example("no callback_url", lambda url: json.dumps({"payload": {"url": url}}).encode()),
        Example("callbackUrl", lambda url: json.dumps({"callbackUrl": url}).encode()),
    ],
    "A URL that is not a Workflows callback": [
        # "other host" is added by the test: a server that records any request.
        Example(
            "http:// Google",
            lambda url: fields()(
                url.replace(url.split("/v1/")[0], "http://workflowexecutions.googleapis.com")
            ),
        ),
        Example("a query string", lambda url: fields()(url + "?alt=json")),
        Example(
            "not in ALLOWED_WORKFLOWS",
            fields(payloa=1),
            env={"ALLOWED_WORKFLOWS": "projects/test-project/locations/*/workflows/other"},
        ),
    ],
    "Published after `expires_at`": [Example("an hour ago", fields(expires_at=PAST))],
    "More than `MAX_MESSAGE_BYTES` (64 KiB) of data": [
        Example("70 000 bytes", fields(payload="x" * 70_000)),
    ],
    "The execution has ended, or the result was published twice": [
        Example("ended", fields(payload={"r": 1}), execution_ended=True),
        Example("twice", fields(payload={"r": 1}), times=2),
    ],
    "A successful result that is a map with an `error` key": [
        Example("error key", fields(payload={"error": {"code": "X", "message": "m"}})),
    ],
}
# Rows about messages that never reach the relay: nothing to send it.
NEVER_REACH_THE_RELAY = (
    "Published to the wrong topic",
    "The worker lacks `roles/pubsub.publisher`",
)


def row_named(prefix: str) -> tuple[str, tuple[str, str]]:
    (row,) = [(m, cells) for m, cells in mistake_table().items() if m.startswith(prefix)]
    return row


def test_every_row_is_walked() -> None:
    prefixes = list(EXAMPLES) + list(NEVER_REACH_THE_RELAY)
    for mistake in mistake_table():
        assert sum(mistake.startswith(p) for p in prefixes) == 1, f"no examples for {mistake!r}"
    for prefix in prefixes:
        row_named(prefix)  # each still names a row


@pytest.mark.parametrize("prefix", list(EXAMPLES))
def test_each_example_the_row_names_is_sent(prefix: str) -> None:
    # `payloa`, `"post"`, `callbackUrl`...: what the doc gives as an example is one here.
    mistake, _ = row_named(prefix)
    named = re.findall(r"`([^`]+)`", " ".join(re.findall(r"\(([^)]*)\)", mistake)))
    sent = " ".join(example.name for example in EXAMPLES[prefix])
    for literal in named:
        assert literal.strip('"') in sent, f"{mistake}: no example sends {literal}"


@pytest.mark.parametrize("prefix", NEVER_REACH_THE_RELAY)
def test_rows_the_relay_never_sees_say_so(prefix: str) -> None:
    _, (relay, step) = row_named(prefix)
    assert relay.startswith("Never sees it")
    assert expectation(step) == "waits"


@pytest.mark.parametrize("prefix", list(EXAMPLES))
def test_the_row_holds_against_the_relay(
    prefix: str,
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mistake, (relay_does, step) = row_named(prefix)
    expected = expectation(step)
    examples = list(EXAMPLES[prefix])
    with AttackerServer() as attacker:
        if prefix.startswith("A URL that is not"):
            other = f"http://127.0.0.1:{attacker.port}"
            examples.append(
                Example(
                    "other host",
                    lambda url: fields(payloa=1)(other + url.split(workflows_api.host, 1)[1]),
                )
            )
        for example in examples:
            relay_env(**{"ALLOWED_WORKFLOWS": None, **example.env})
            client = make_client()
            execution = workflows_api.create_execution()
            url = workflows_api.create_callback(execution, method=example.method)
            if example.execution_ended:
                workflows_api.end_execution(execution)
            capsys.readouterr()
            for attempt in range(example.times):
                assert send_binary(client, example.data(url), f"{example.name}-{attempt}") == 200
            outcomes = [line["outcome"] for line in log_lines(capsys)]
            check(expected, example, url, workflows_api, outcomes)
        assert attacker.received == [], "a refused URL was called"
    # The relay's column says the same as the step's.
    assert ("fails fast" in relay_does) == (expected == "fails_fast"), mistake


def check(
    expected: str,
    example: Example,
    url: str,
    api: FakeWorkflowsApi,
    outcomes: list[str],
) -> None:
    calls = api.calls_to(url)
    where = f"{example.name}: {outcomes}"
    if expected == "waits":
        assert calls == [], where
        assert outcomes in (["message_rejected"], ["url_refused"], ["expired"]), where
    elif expected == "fails_fast":
        assert outcomes == ["failed_fast"], where
        request = api.await_callback(url, 2)["http_request"]
        assert request["body"]["error"]["code"] == "INVALID_MESSAGE", where
        assert request["method"] == example.method, where  # upper case, as created
    elif expected == "resumes_once" and example.execution_ended:
        assert outcomes == ["execution_gone"], where
        assert [c.status for c in calls] == [404], where
    elif expected == "resumes_once":
        assert outcomes[0] == "delivered", where
        assert outcomes[1] in ("delivered", "already_pending", "execution_gone"), where
        assert api.await_callback(url, 2)["http_request"]["body"] == {"r": 1}, where
        with pytest.raises(TimeoutError):
            api.await_callback(url, 0.2)  # no second resume
    else:
        assert expected == "error_delivered"
        assert outcomes == ["delivered"], where
        body = api.await_callback(url, 2)["http_request"]["body"]
        assert set(body) == {"error"}, where
