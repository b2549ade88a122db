"""examples/producers/go/main.go, checked without a Go toolchain (none on this machine).

A golden comparison: the struct definitions (field order, json tags) and the
field copies are read from the Go source, the bytes encoding/json would write
for the golden job are rebuilt from them with a model of encoding/json's
documented rules (fields in declaration order; json.RawMessage compacted;
strings escaped, '<', '>', '&', U+2028 and U+2029 included), and compared with
the bytes the Python and Node snippets publish. The snippet is not compiled here.
encoding/json: https://pkg.go.dev/encoding/json#Marshal
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from callback_relay.message import parse_message_data
from tests.producers.golden import (
    EXPECTED_FAILURE_DATA,
    EXPECTED_RESULT_DATA,
    FAIL_ARGS,
    JOB,
    RESULT_JSON,
    SNIPPETS,
)

GO_DIR = SNIPPETS / "go"
SOURCE = (GO_DIR / "main.go").read_text()
_STRUCT_RE = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.MULTILINE | re.DOTALL)
_FIELD_RE = re.compile(r"^\s*(\w+)\s+(\S+)\s+`json:\"([^\"]+)\"`\s*$")


@dataclasses.dataclass(frozen=True)
class GoField:
    name: str
    go_type: str
    tag: str


def go_structs(source: str) -> dict[str, list[GoField]]:
    structs: dict[str, list[GoField]] = {}
    for name, body in _STRUCT_RE.findall(source):
        fields = []
        for line in body.splitlines():
            match = _FIELD_RE.match(line)
            assert match, f"cannot read the field {line!r} of {name}"
            fields.append(GoField(*match.groups()))
        structs[name] = fields
    return structs


STRUCTS = go_structs(SOURCE)


@dataclasses.dataclass(frozen=True)
class RawJSON:
    """A json.RawMessage value: bytes that encoding/json compacts, not re-encodes."""

    text: str


@dataclasses.dataclass(frozen=True)
class GoStruct:
    type_name: str
    fields: dict[str, Any]  # Go field name -> value


_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
_LINE_ESCAPES = {"\u2028": "\\u2028", "\u2029": "\\u2029"}


def go_string(value: str) -> str:
    encoded = json.dumps(value, ensure_ascii=False)
    for char, escape in {**_HTML_ESCAPES, **_LINE_ESCAPES}.items():
        encoded = encoded.replace(char, escape)
    return encoded


def go_compact(raw: str) -> str:
    """json.Compact with HTML escaping, as Marshal applies to a RawMessage."""
    json.loads(raw)  # Marshal refuses invalid JSON in a RawMessage
    out: list[str] = []
    in_string = escaped = False
    for char in raw:
        if in_string:
            out.append(_HTML_ESCAPES.get(char) or _LINE_ESCAPES.get(char) or char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char in " \t\r\n":
            continue
        else:
            out.append(_HTML_ESCAPES.get(char, char))
            in_string = char == '"'
    return "".join(out)


def go_marshal(value: Any) -> str:
    if isinstance(value, GoStruct):
        fields = STRUCTS[value.type_name]
        assert set(value.fields) == {f.name for f in fields}, value.type_name
        parts = []
        for field in fields:
            tag, _, options = field.tag.partition(",")
            assert options == "", f"{value.type_name}.{field.name}: model has no {options}"
            parts.append(f"{go_string(tag)}:{go_marshal(value.fields[field.name])}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, RawJSON):
        return go_compact(value.text)
    if isinstance(value, str):
        return go_string(value)
    raise TypeError(f"no model for {value!r}")


def decode_job(job: dict[str, Any]) -> GoStruct:
    """json.Decode into Job: string fields by tag; `job` kept raw."""
    fields: dict[str, Any] = {}
    for field in STRUCTS["Job"]:
        item = job[field.tag]
        raw = field.go_type == "json.RawMessage"
        fields[field.name] = RawJSON(json.dumps(item)) if raw else item
    return GoStruct("Job", fields)


def relay_message(job: GoStruct, payload: Any) -> GoStruct:
    """relayMessage(job, payload), from the assignments in the Go source."""
    body = re.search(r"return RelayMessage\{(.*?)\}\n", SOURCE, re.DOTALL)
    assert body, "relayMessage must return a RelayMessage literal"
    fields: dict[str, Any] = {}
    for name, expression in re.findall(r"(\w+):\s*([\w.]+),", body.group(1)):
        if expression == "payload":
            fields[name] = payload
        else:
            source_field = re.fullmatch(r"job\.(\w+)", expression)
            assert source_field, f"{name} must be copied from the job, not {expression}"
            fields[name] = job.fields[source_field.group(1)]
    return GoStruct("RelayMessage", fields)


def test_the_relay_message_struct_is_the_contract_in_order() -> None:
    assert [(f.tag, f.go_type) for f in STRUCTS["RelayMessage"]] == [
        ("callback_url", "string"),
        ("payload", "any"),
        ("method", "string"),
        ("expires_at", "string"),
    ]
    assert [f.tag for f in STRUCTS["ErrorPayload"]] == ["error"]
    assert [f.tag for f in STRUCTS["CallbackError"]] == ["code", "message", "details"]
    assert [f.tag for f in STRUCTS["Job"]] == ["callback_url", "method", "expires_at", "job"]


def test_callback_url_method_and_expires_at_are_copied_from_the_job() -> None:
    job = decode_job(JOB)
    message = relay_message(job, RawJSON("{}"))
    assert message.fields == {
        "CallbackURL": JOB["callback_url"],
        "Payload": RawJSON("{}"),
        "Method": JOB["method"],
        "ExpiresAt": JOB["expires_at"],
    }


def test_the_result_bytes_equal_the_other_snippets() -> None:
    # main: payload = json.RawMessage(args[0])
    assert "payload = json.RawMessage(args[0])" in SOURCE
    data = go_marshal(relay_message(decode_job(JOB), RawJSON(RESULT_JSON))).encode()
    assert data == EXPECTED_RESULT_DATA


def test_the_failure_bytes_equal_the_other_snippets() -> None:
    # main: --fail CODE MESSAGE [DETAILS] builds ErrorPayload{Error: CallbackError{...}}
    assert "Code: args[1], Message: args[2], Details: details" in SOURCE
    assert "details = json.RawMessage(args[3])" in SOURCE
    code, message, details = FAIL_ARGS
    payload = GoStruct(
        "ErrorPayload",
        {
            "Error": GoStruct(
                "CallbackError", {"Code": code, "Message": message, "Details": RawJSON(details)}
            )
        },
    )
    data = go_marshal(relay_message(decode_job(JOB), payload)).encode()
    assert data == EXPECTED_FAILURE_DATA


def test_it_publishes_the_marshalled_message_as_data_without_attributes() -> None:
    assert "json.Marshal(relayMessage(job, payload))" in SOURCE
    assert "&pubsub.Message{Data: data}" in SOURCE
    assert '"cloud.google.com/go/pubsub/v2"' in SOURCE
    assert re.search(r"^require cloud\.google\.com/go/pubsub/v2 v2\.\d+\.\d+$",
                     (GO_DIR / "go.mod").read_text(), re.MULTILINE)  # fmt: skip


@pytest.mark.parametrize("text", ["a <b> & c", "line\u2028separator", 'quote " and \\'])
def test_go_escapes_still_parse_to_the_same_body(text: str) -> None:
    # Go writes '<' as \u003c where Python and Node write '<': the relay reads both alike.
    job = decode_job(JOB)
    raw = json.dumps({"note": text}, ensure_ascii=False)
    go_data = go_marshal(relay_message(job, RawJSON(raw))).encode()
    assert b"<" not in go_data
    assert json.loads(parse_message_data(go_data, 65536).body or b"") == {"note": text}
