from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callback_relay.idempotency_key import idempotency_key


@pytest.mark.parametrize("message_id", ["1001", "12345678901234567", "k-9", "a" * 128])
def test_a_short_visible_ascii_id_is_sent_as_it_is(message_id: str) -> None:
    assert idempotency_key(message_id) == message_id


@pytest.mark.parametrize(
    "message_id",
    ["", "a b", "x\r\nInjected: 1", "é", "\ud800", "a" * 129, "x" * 200_000, "sha256-abc"],
)
def test_anything_else_is_a_digest(message_id: str) -> None:
    key = idempotency_key(message_id)
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    assert key == f"sha256-{digest}"


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters() | st.characters(categories=["Cs"])))
def test_every_key_is_a_valid_header_value(message_id: str) -> None:
    key = idempotency_key(message_id)
    assert key.isascii()
    assert key.isprintable()
    assert " " not in key
    assert 0 < len(key) <= 128
    assert key == idempotency_key(message_id)  # stable across redeliveries
