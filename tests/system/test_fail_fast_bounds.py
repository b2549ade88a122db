"""Issue 17: what fail fast reads of a rejected message, and what it never does.

It reads only the top level of a message (function/callback_relay/json_top_level.py),
so data that is not a JSON object (not UTF-8, not JSON) must still name no callback,
as it did when the whole message went through json.loads.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.fake_workflows_api import FakeWorkflowsApi
from tests.system.test_function_app import log_lines, make_client, send_binary


@pytest.mark.parametrize(
    "shape",
    [
        '{{"callback_url": "{url}", "payload": {{oops}}}}',  # invalid JSON inside the payload
        '{{"callback_url": "{url}", "payload": [1, 2}}',
        '{{"callback_url": "{url}", "colour": "red\\x"}}',  # an escape JSON does not have
    ],
)
def test_data_that_is_not_json_fails_nothing_fast(
    shape: str,
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = make_client()
    url = workflows_api.create_callback(workflows_api.create_execution())
    assert send_binary(client, shape.format(url=url).encode(), "not-json") == 200
    assert workflows_api.calls == []
    (line,) = log_lines(capsys)
    assert (line["outcome"], line["reason"][:12]) == ("message_rejected", "invalid_json")


def test_a_message_over_the_limit_fails_fast_from_its_top_level_alone(
    relay_env: Callable[..., None],
    workflows_api: FakeWorkflowsApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Too large to parse: the top level names the callback, whatever the payload holds.
    relay_env(MAX_MESSAGE_BYTES="1024")
    client = make_client()
    url = workflows_api.create_callback(workflows_api.create_execution())
    data = f'{{"callback_url": "{url}", "payload": {{"big": "{"x" * 2000}", oops}}}}'.encode()
    assert send_binary(client, data, "too-big") == 200
    error = workflows_api.await_callback(url, 2)["http_request"]["body"]["error"]
    assert error["details"]["reason"] == "too_large"
    (line,) = log_lines(capsys)
    assert line["outcome"] == "failed_fast"
