"""One JSON line per log record, in Cloud Logging's structured format.

Cloud Run functions turn each stdout line that is a JSON object into a log
entry: ``severity`` and ``message`` become the entry's own fields and
``logging.googleapis.com/trace`` links it to the request's trace.
https://cloud.google.com/logging/docs/structured-logging

Every line is strict UTF-8 JSON of at most ``MAX_LINE_BYTES``, whatever the
fields hold: lone surrogates (which have no UTF-8 encoding) become U+FFFD; the
characters that ``str.splitlines()`` ends a line at and JSON leaves raw (U+0085,
U+2028, U+2029) are written as JSON escapes, so that no reader splits one
line into several (JSON already escapes the others, all below U+0020); and
an oversized line is rebuilt with long strings cut, large objects replaced by
their size and digest, and the replay record replaced by its summary
(``truncated: true``). Cloud Logging takes up to 256 KB per entry
(https://cloud.google.com/logging/quotas); 64 KiB leaves room for its metadata.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from collections.abc import Callable
from typing import Any

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # the logging module's numbers
LEVELS = {"DEBUG": DEBUG, "INFO": INFO, "WARNING": WARNING, "ERROR": ERROR}
SEVERITIES = {number: name for name, number in LEVELS.items()}
MAX_LINE_BYTES = 64 * 1024
REPLAY_KEY = "replay"
# In a line that is too long: strings and JSON values longer than these are cut.
_MAX_STRING_CHARS = 2048
_MAX_VALUE_BYTES = 8192
_MIN_STRING_CHARS = 512
_IDENTIFYING_KEYS = ("severity", "message", "outcome", "reason", "message_id", "truncated")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# Line breaks for str.splitlines() that json.dumps(ensure_ascii=False) leaves raw.
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def _dumps(entry: dict[str, Any]) -> str:
    return json.dumps(entry, default=str, ensure_ascii=False)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", text).encode("utf-8")


def _strict_text(text: str) -> tuple[str, int]:
    """``text`` without lone surrogates or raw line breaks, and its size in UTF-8."""
    if text.isascii():  # O(1) for the usual line
        return text, len(text)
    text = text.translate(_LINE_BREAKS)
    try:
        return text, len(text.encode("utf-8"))
    except UnicodeEncodeError:
        text = _SURROGATE_RE.sub("\ufffd", text)
        return text, len(text.encode("utf-8"))


def _digest(value: Any) -> dict[str, Any]:
    try:
        data = _utf8(_dumps({"v": value}))
    except (ValueError, TypeError, RecursionError):
        return {"truncated": True, "type": type(value).__name__}
    return {"truncated": True, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def bounded(value: Any, max_bytes: int) -> Any:
    """``value`` when its JSON is at most ``max_bytes``, else its size and digest."""
    try:
        size = len(_utf8(_dumps({"v": value})))
    except (ValueError, TypeError, RecursionError):
        return _digest(value)
    return value if size <= max_bytes else _digest(value)


def _shrink(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) <= _MAX_STRING_CHARS:
            return value
        return f"{value[:_MAX_STRING_CHARS]}...[truncated from {len(value)} chars]"
    if isinstance(value, (dict, list)):
        return bounded(value, _MAX_VALUE_BYTES)
    return value


def encode_line(
    entry: dict[str, Any], replay_summary: Callable[[], dict[str, Any]] | None = None
) -> str:
    """The entry as one JSON line (with its newline): strict UTF-8, at most MAX_LINE_BYTES."""
    try:
        line, size = _strict_text(_dumps(entry) + "\n")
    except (ValueError, TypeError, RecursionError):
        line, size = "", 0
    if 0 < size <= MAX_LINE_BYTES:
        return line
    # Rare: rebuild the line with every field bounded.
    small = {key: _shrink(value) for key, value in entry.items() if key != REPLAY_KEY}
    if REPLAY_KEY in entry:
        small[REPLAY_KEY] = replay_summary() if replay_summary else _digest(entry[REPLAY_KEY])
    small["truncated"] = True
    line, size = _strict_text(_dumps(small) + "\n")
    if size <= MAX_LINE_BYTES:
        return line
    # Only reachable with many large fields: keep what identifies the line.
    minimal = {
        key: value[:_MIN_STRING_CHARS] if isinstance(value, str) else value
        for key, value in small.items()
        if key in _IDENTIFYING_KEYS
    }
    return _strict_text(_dumps(minimal) + "\n")[0]


class StructuredLog:
    """Writes one JSON line per entry to the current ``sys.stdout``, flushed.

    The relay logs one line per message, so this skips the logging module's
    record, caller lookup and handler chain, which cost as much again as the
    line itself (``python -m bench.steps``). Flushing keeps a line from waiting in
    a buffer while the instance is throttled between requests.
    """

    def __init__(self, level: str = "INFO") -> None:
        self.level = LEVELS[level]
        self._lock = threading.Lock()

    def enabled(self, level: int) -> bool:
        return level >= self.level

    def write(
        self,
        level: int,
        message: str,
        fields: dict[str, Any],
        replay_summary: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """Write one line; never raises (a log line must not take a request down)."""
        if level < self.level:
            return
        entry = {"severity": SEVERITIES.get(level, "DEFAULT"), "message": message, **fields}
        text = encode_line(entry, replay_summary)
        try:
            with self._lock:  # one whole line at a time from every thread
                sys.stdout.write(text)
                sys.stdout.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stdout must never take down a request
