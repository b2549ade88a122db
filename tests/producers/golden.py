"""One job, one result, one failure, and the exact bytes every producer snippet must publish.

The result has no '<', '>', '&' (Go's encoding/json escapes them), no integer-like
keys (JavaScript orders those first) and no floats (languages print them
differently), so the four snippets can agree byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from callback_relay.message import CallbackMessage, parse_message_data

REPO = Path(__file__).resolve().parents[2]
SNIPPETS = REPO / "examples" / "producers"
CALLBACK_URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/my-project/locations/us-central1"
    "/workflows/orders/executions/9a1f3c2e-5b7d-4e8f-a0b1-c2d3e4f5a6b7"
    "/callbacks/1b2c3d4e-5f60-4718-9a0b-c1d2e3f4a5b6_8f7e6d5c"
)
EXPIRES_AT = "2099-01-01T00:00:00.000000Z"
JOB: dict[str, Any] = {
    "callback_url": CALLBACK_URL,
    "method": "POST",
    "expires_at": EXPIRES_AT,
    "job": {"order_id": "A-1001", "items": 3},
}
RESULT_JSON = (
    '{"order_id":"A-1001","status":"shipped","parcels":[{"id":"P-1","weight_g":1200}],'
    '"note":"Zürich, Genève"}'
)
FAIL_ARGS = ("OUT_OF_STOCK", "no stock for order A-1001", '{"sku":"é-42","wanted":3}')

EXPECTED_RESULT_DATA = (
    '{"callback_url":"' + CALLBACK_URL + '","payload":' + RESULT_JSON
    + ',"method":"POST","expires_at":"' + EXPIRES_AT + '"}'
).encode()  # fmt: skip
EXPECTED_FAILURE_PAYLOAD = (
    '{"error":{"code":"OUT_OF_STOCK","message":"no stock for order A-1001",'
    '"details":{"sku":"é-42","wanted":3}}}'
)
EXPECTED_FAILURE_DATA = (
    '{"callback_url":"' + CALLBACK_URL + '","payload":' + EXPECTED_FAILURE_PAYLOAD
    + ',"method":"POST","expires_at":"' + EXPIRES_AT + '"}'
).encode()  # fmt: skip


def job_json() -> str:
    return json.dumps(JOB)


def assert_relay_accepts_result(data: bytes) -> CallbackMessage:
    """The relay's own parser reads it, and the workflow gets the result as the body."""
    message = parse_message_data(data, 65536)
    assert message.callback_url == CALLBACK_URL
    assert message.method == "POST"
    assert message.body == RESULT_JSON.encode()
    return message


def assert_relay_accepts_failure(data: bytes) -> CallbackMessage:
    """The body is the error convention the subworkflow turns into CallbackError."""
    message = parse_message_data(data, 65536)
    body = json.loads(message.body or b"")
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "OUT_OF_STOCK"
    return message
