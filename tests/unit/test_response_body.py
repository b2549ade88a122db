"""Reading and decoding an answer never goes past the cap, whatever the bytes."""

from __future__ import annotations

import functools
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callback_relay.response_body import MAX_RESPONSE_BYTES, decode_capped, read_capped


class ChunkedRaw:
    """A raw body that hands out at most the given chunk sizes, like a slow socket."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data = data
        self.sizes = sizes or [1]
        self.offset = 0
        self.calls = 0

    def read(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        assert decode_content is False  # never let urllib3 inflate
        assert amt is not None
        assert amt <= MAX_RESPONSE_BYTES + 1
        size = min(amt, self.sizes[self.calls % len(self.sizes)])
        self.calls += 1
        chunk = self.data[self.offset : self.offset + size]
        self.offset += len(chunk)
        return chunk


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 3 * MAX_RESPONSE_BYTES),
    st.lists(st.integers(1, 40_000), min_size=1, max_size=5),
)
def test_read_capped_keeps_a_prefix_and_says_whether_it_is_whole(
    length: int, sizes: list[int]
) -> None:
    data = bytes(i % 251 for i in range(length))
    raw = ChunkedRaw(data, sizes)
    body, whole = read_capped(functools.partial(raw.read, decode_content=False))
    assert body == data[:MAX_RESPONSE_BYTES]
    assert whole is (length <= MAX_RESPONSE_BYTES)
    # Never more than one read past the cap.
    assert raw.offset <= MAX_RESPONSE_BYTES + 1


@pytest.mark.parametrize(
    ("length", "whole"),
    [(MAX_RESPONSE_BYTES - 1, True), (MAX_RESPONSE_BYTES, True), (MAX_RESPONSE_BYTES + 1, False)],
)
@pytest.mark.parametrize("sizes", [[MAX_RESPONSE_BYTES + 1], [1], [16 * 1024]])
def test_a_body_of_exactly_the_cap_is_whole_and_one_byte_more_is_not(
    length: int, whole: bool, sizes: list[int]
) -> None:
    data = bytes(i % 251 for i in range(length))
    raw = ChunkedRaw(data, sizes)
    assert read_capped(functools.partial(raw.read, decode_content=False)) == (
        data[:MAX_RESPONSE_BYTES],
        whole,
    )
    assert raw.offset <= MAX_RESPONSE_BYTES + 1


@functools.cache
def _packed(megabytes: int, encoding: str) -> bytes:
    """``megabytes`` MiB of zeros and b"end", compressed; built once per shape."""
    wbits = {"gzip": 31, "x-gzip": 31, "deflate": 15, "raw-deflate": -15}[encoding]
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(megabytes)]
    return b"".join([*parts, compressor.compress(b"end"), compressor.flush()])


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from([0, 1, 4, 32]), st.sampled_from(["gzip", "x-gzip", "deflate", "raw-deflate"])
)
def test_a_bomb_inflates_to_the_cap_at_most(megabytes: int, encoding: str) -> None:
    plain_length = (megabytes << 20) + 3
    header = "deflate" if encoding == "raw-deflate" else encoding
    decoded, whole = decode_capped(_packed(megabytes, encoding), header)
    assert len(decoded) == min(plain_length, MAX_RESPONSE_BYTES)
    assert whole is (plain_length <= MAX_RESPONSE_BYTES)
    if whole:
        assert decoded.endswith(b"end")


@given(st.binary(max_size=2000), st.sampled_from(["gzip", "deflate", "br", "gzip, gzip", "zstd"]))
def test_undecodable_bodies_are_empty_not_errors(data: bytes, encoding: str) -> None:
    decoded, whole = decode_capped(data, encoding)
    assert len(decoded) <= MAX_RESPONSE_BYTES
    if not whole:
        assert decoded == b"" or encoding in ("gzip", "deflate")


def test_identity_is_returned_as_is() -> None:
    assert decode_capped(b"{}", None) == (b"{}", True)
    assert decode_capped(b"{}", " Identity ") == (b"{}", True)
