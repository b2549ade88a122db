"""A few top-level string fields of a JSON object, read without building the rest.

A message the relay rejects can still name the callback that should receive the
error (fail fast), and it may be as large as Pub/Sub allows (10 MB).
``json.loads`` would build the whole document to read two fields: 9.9 MB of
``[{},{},...]`` becomes 3.3 million dicts and took a worker to 327 MB. This
reader walks only the top level of the object, over the bytes, with regular
expressions that skip nested values without building them (strings, and
brackets nested up to ``_SKIP_DEPTH`` deep, in one match each). Its memory is
the few small strings it returns, whatever the input; its time is at most
``MAX_STEPS`` steps (one per top-level field or per bracket nested deeper than
``_SKIP_DEPTH``), about 0.2 s of CPU for 10 MB of ordinary JSON.

It is as lenient as fail fast must be (a message is read again because it broke
the contract): what it skips is not validated, only the top level's shape, the
UTF-8 of the whole text and the strings it returns. For a valid JSON object it
gives what ``json.loads`` gives (the last of duplicate keys wins), which
``tests/unit/test_json_top_level.py`` checks against ``json.loads`` with
Hypothesis.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
from collections.abc import Collection

# Steps (top-level fields, and brackets nested deeper than _SKIP_DEPTH) before giving up.
MAX_STEPS = 100_000
# Brackets nested up to this deep are skipped by one regular expression match.
_SKIP_DEPTH = 4
# A key longer than this (escapes included) is none of the names asked for.
_MAX_KEY_BYTES = 128
_UTF8_CHUNK = 1 << 20

_WS = rb"[ \t\n\r]*"
# A whole JSON string, escapes included, matched possessively: no backtracking.
_STRING = rb'"(?:[^"\\]++|\\.)*+"'
_STRING_RE = re.compile(_STRING, re.DOTALL)
_OPEN_RE = re.compile(_WS + rb"\{" + _WS)
_KEY_RE = re.compile(rb"(" + _STRING + rb")" + _WS + rb":" + _WS, re.DOTALL)
_SCALAR_RE = re.compile(rb"[^\s,\]}{\[\"]+")  # a number, true, false, null, NaN, ...
_NEXT_RE = re.compile(_WS + rb"([,}])" + _WS)
_END_RE = re.compile(_WS)
_OPENING = frozenset(b"{[")
_CLOSING = frozenset(b"}]")


@functools.cache
def _skip_re() -> re.Pattern[bytes]:
    """Anything but a bracket that closes an enclosing value, nested up to _SKIP_DEPTH."""
    flat = rb'[^"{}\[\]]++|' + _STRING
    pattern = rb"(?:" + flat + rb")*+"
    for _ in range(_SKIP_DEPTH):
        pattern = rb"(?:" + flat + rb"|\{" + pattern + rb"\}|\[" + pattern + rb"\])*+"
    return re.compile(pattern, re.DOTALL)


class _TooMuchWork(Exception):
    pass


def _is_utf8(data: bytes) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for start in range(0, len(view), _UTF8_CHUNK):
            decoder.decode(view[start : start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _skip_nested(data: bytes, pos: int, budget: list[int]) -> int:
    """The end of the object or array that starts at ``pos``, or -1 if malformed."""
    skip = _skip_re()
    depth = 0
    while pos < len(data):
        byte = data[pos]
        if byte in _OPENING:
            depth += 1
        elif byte in _CLOSING:
            depth -= 1
            if depth == 0:
                return pos + 1
        else:
            return -1  # an unterminated string
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooMuchWork
        match = skip.match(data, pos + 1)
        pos = match.end() if match is not None else pos + 1
    return -1


def _decode(data: bytes, start: int, end: int) -> str:
    """The JSON string at ``data[start:end]``, escapes decoded; ValueError if it is not one."""
    value = json.loads(data[start:end].decode("utf-8"))
    if not isinstance(value, str):
        raise ValueError("not a JSON string")
    return value


def string_fields(
    data: bytes, names: Collection[str], max_value_bytes: int
) -> dict[str, str | None] | None:
    """The fields ``names`` at the top level of the JSON object ``data``.

    Each name present maps to its string value, or to None when the value is
    not a string or is longer than ``max_value_bytes`` as JSON text. The result
    is None when ``data`` is not UTF-8, not a JSON object at its top level, or
    would take more than MAX_STEPS steps to read.
    """
    match = _OPEN_RE.match(data)
    if match is None:
        return None
    pos = match.end()
    found: dict[str, str | None] = {}
    budget = [MAX_STEPS]
    try:
        if data[pos : pos + 1] == b"}":
            pos += 1
        else:
            pos = _fields(data, pos, names, max_value_bytes, found, budget)
    except (_TooMuchWork, ValueError):  # ValueError: a key or value that is not JSON
        return None
    if pos < 0 or _END_RE.fullmatch(data, pos) is None:
        return None
    return found if _is_utf8(data) else None


def _fields(
    data: bytes,
    pos: int,
    names: Collection[str],
    max_value_bytes: int,
    found: dict[str, str | None],
    budget: list[int],
) -> int:
    """Read ``"key": value`` pairs from ``pos`` to the object's end; -1 if malformed."""
    while True:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooMuchWork
        key_match = _KEY_RE.match(data, pos)
        if key_match is None:
            return -1
        key_start, key_end = key_match.span(1)
        key = _decode(data, key_start, key_end) if key_end - key_start <= _MAX_KEY_BYTES else None
        wanted = key is not None and key in names
        pos = key_match.end()
        value: str | None = None
        first = data[pos : pos + 1]
        if first == b'"':
            string = _STRING_RE.match(data, pos)
            if string is None:
                return -1
            if wanted and string.end() - pos <= max_value_bytes:
                value = _decode(data, pos, string.end())
            pos = string.end()
        elif first in (b"{", b"["):
            pos = _skip_nested(data, pos, budget)
            if pos < 0:
                return -1
        else:
            scalar = _SCALAR_RE.match(data, pos)
            if scalar is None:
                return -1
            pos = scalar.end()
        if key is not None and wanted:
            found[key] = value
        after = _NEXT_RE.match(data, pos)
        if after is None:
            return -1
        pos = after.end()
        if after.group(1) == b"}":
            return pos
