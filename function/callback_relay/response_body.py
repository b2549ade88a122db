"""Reads at most a fixed number of bytes of an answer, and never inflates past it.

A classification needs the status, a few headers and the start of an error
body; 64 KiB is plenty. The body is read raw (no automatic decoding) and a
gzip or deflate body is decompressed with a ``max_length``, so a small
compressed body cannot expand into gigabytes (a "gzip bomb"). The caller
closes the connection when the body was cut, instead of draining the rest; a
body read to its end has already returned its connection to the pool.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

MAX_RESPONSE_BYTES = 64 * 1024
# The encodings the client asks for (Accept-Encoding) and so must be able to read.
ACCEPT_ENCODING = "gzip, deflate"
_READ_CHUNK = 16 * 1024


def read_capped(read: Callable[[int], bytes], cap: int = MAX_RESPONSE_BYTES) -> tuple[bytes, bool]:
    """(up to ``cap`` bytes from ``read``, whether that is the whole body).

    At most ``cap + 1`` bytes are ever read: one more than the cap tells a body
    of exactly ``cap`` bytes from a longer one.
    """
    chunks: list[bytes] = []
    total = 0
    while total <= cap:
        chunk = read(min(_READ_CHUNK, cap + 1 - total))
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)[:cap], False


def decode_capped(
    data: bytes, content_encoding: str | None, cap: int = MAX_RESPONSE_BYTES
) -> tuple[bytes, bool]:
    """(the decoded body, at most ``cap`` bytes; whether it decoded whole).

    Unknown encodings, stacked encodings and corrupt data give ``(b"", False)``:
    the answer is then classified on its status and headers alone.
    """
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return data[:cap], True
    if encoding in ("gzip", "x-gzip"):
        candidates: tuple[int, ...] = (zlib.MAX_WBITS | 16,)
    elif encoding == "deflate":
        # RFC 9110 says zlib-wrapped; some servers send raw deflate, as urllib3 allows.
        candidates = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    else:
        return b"", False
    for wbits in candidates:
        decompressor = zlib.decompressobj(wbits)
        try:
            decoded = decompressor.decompress(data, cap)
        except zlib.error:
            continue
        whole = decompressor.eof and not decompressor.unconsumed_tail
        return decoded, whole
    return b"", False
