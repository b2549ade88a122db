"""json_top_level: what json.loads would say about a few top-level fields, in bounded memory."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callback_relay.json_top_level import MAX_STEPS, string_fields
from callback_relay.message import ReplyTo, fail_fast_target
from harness import procstat

NAMES = frozenset({"callback_url", "method", "expires_at"})
URL = "https://workflowexecutions.googleapis.com/v1/projects/p/locations/l/workflows/w/executions/e/callbacks/c"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(sorted(NAMES)), children, max_size=4
        )
    ),
    max_leaves=10,
)
objects = st.dictionaries(
    st.sampled_from(sorted(NAMES)) | st.text(max_size=12), json_values, max_size=6
)


def expected(document: dict[str, Any], limit: int) -> dict[str, str | None]:
    return {
        key: value if isinstance(value, str) and len(json.dumps(value)) <= limit else None
        for key, value in document.items()
        if key in NAMES
    }


@settings(max_examples=80, deadline=None)
@given(
    document=objects,
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
    pad=st.sampled_from(["", " ", "\n\t "]),
)
def test_agrees_with_json_loads_on_valid_objects(
    document: dict[str, Any], ensure_ascii: bool, indent: int | None, pad: str
) -> None:
    text = pad + json.dumps(document, ensure_ascii=ensure_ascii, indent=indent) + pad
    data = text.encode("utf-8", "surrogatepass")
    if not ensure_ascii and any("\ud800" <= c <= "\udfff" for c in text):
        return  # a lone surrogate written raw is not UTF-8: rejected, as decode() would
    assert string_fields(data, NAMES, 10_000) == expected(json.loads(text), 10_000)


def test_duplicates_keep_the_last_as_json_loads_does() -> None:
    data = b'{"method": "PUT", "method": 5, "callback_url": "a", "callback_url": "b"}'
    assert string_fields(data, NAMES, 100) == {"method": None, "callback_url": "b"}
    assert json.loads(data)["callback_url"] == "b"


def test_escaped_keys_and_values_are_decoded() -> None:
    data = rb'{"callback\u005furl": "a\/b", "m\u0065thod": "P\u004fST"}'
    assert string_fields(data, NAMES, 100) == {"callback_url": "a/b", "method": "POST"}


def test_a_value_longer_than_the_limit_is_not_read() -> None:
    data = json.dumps({"callback_url": "x" * 50}).encode()
    assert string_fields(data, NAMES, 52) == {"callback_url": "x" * 50}
    assert string_fields(data, NAMES, 51) == {"callback_url": None}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'"callback_url"',
        b"{",
        b'{"callback_url": "a"',
        b'{"callback_url": "a",}',
        b'{"callback_url" "a"}',
        b'{"callback_url": "a"} {}',
        b'{"callback_url": "a\\x"}',  # an escape JSON does not have
        b'{"callback_url": "a\nb"}',  # a raw control character in a string
        b'{"callback_url": "a", "p": ["unterminated]}',
        b'{"callback_url": "a", "p": [}',
        b'{"callback_url": "\xff"}',
        b'{"callback_url": "a", "p": "\xff"}',  # invalid UTF-8 anywhere
    ],
)
def test_what_is_not_an_object_gives_none(data: bytes) -> None:
    assert string_fields(data, NAMES, 100) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet='{}[]",:\\ ab01eu', max_size=60).map(str.encode))
def test_any_bytes_give_fields_or_none_never_an_exception(data: bytes) -> None:
    result = string_fields(data, NAMES, 100)
    assert result is None or set(result) <= NAMES


def test_nesting_deeper_than_the_step_budget_gives_none_quickly() -> None:
    depth = MAX_STEPS + 10
    data = b'{"callback_url": "a", "p": ' + b"[" * depth + b"]" * depth + b"}"
    started = time.process_time()
    assert string_fields(data, NAMES, 100) is None
    assert time.process_time() - started < 1.0


def test_a_nine_megabyte_message_of_empty_objects_is_read_in_bounded_memory() -> None:
    # The red team's message: 3.3 million {} made json.loads take 327 MB.
    head = json.dumps({"callback_url": URL, "method": "PUT", "colour": "red"})[:-1]
    data = (head + ', "payload": [' + ",".join(["{}"] * 3_300_000) + "]}").encode()
    assert len(data) > 9_900_000
    pid = os.getpid()
    if not procstat.reset_peak_rss(pid):
        pytest.skip("/proc/self/clear_refs is not writable here")
    before = procstat.rss_mib(pid)
    started = time.process_time()
    target = fail_fast_target(data)
    cpu = time.process_time() - started
    grown = procstat.peak_rss_mib(pid) - before
    assert target == ReplyTo(URL, "PUT")
    assert grown < 2.0, f"peak RSS grew {grown:.1f} MiB"
    assert cpu < 1.0, f"{cpu:.2f} s of CPU"
