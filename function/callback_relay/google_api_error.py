"""The fields of a Google API error body that the relay decides on, from untrusted bytes.

Google APIs answer errors as
``{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "...",
"details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "..."}]}}``
(https://cloud.google.com/apis/design/errors). A peer can send anything
instead: deep nesting, huge strings, wrong types, bytes that are not UTF-8.
Parsing never raises; only strings found where the error model puts them are kept.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

MAX_ERROR_EXCERPT = 300
# Enough entries to find an ErrorInfo or a QuotaFailure; Google APIs send one or two.
MAX_DETAILS = 16
_DECODER = json.JSONDecoder()


@dataclasses.dataclass(frozen=True)
class ErrorBody:
    """What a body says. ``structured`` is true only for a complete, parsed error object."""

    structured: bool = False
    status: str = ""
    message: str = ""
    reasons: tuple[str, ...] = ()  # google.rpc.ErrorInfo reasons
    detail_types: tuple[str, ...] = ()  # the details' "@type" URLs
    text: str = ""  # the body as text, for logs when it is not an error object

    @property
    def excerpt(self) -> str:
        """A short text for the log line, never the whole body."""
        if not self.structured:
            return self.text[:MAX_ERROR_EXCERPT]
        head = f"{self.status}: {self.message}" if self.status else self.message
        if self.reasons:
            head = f"{head} (reason {', '.join(self.reasons)})"
        return head[:MAX_ERROR_EXCERPT]


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_error_body(body: bytes, complete: bool = True) -> ErrorBody:
    """Read ``body``; ``complete=False`` says it was cut at the read cap, so never parsed."""
    text = body.decode("utf-8", "replace")
    if not complete or not text.lstrip().startswith("{"):
        return ErrorBody(text=text)
    try:
        document = _DECODER.decode(text)
    except (ValueError, RecursionError):
        # RecursionError: arrays or objects nested thousands deep.
        return ErrorBody(text=text)
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return ErrorBody(text=text)
    details = error.get("details")
    entries = (
        [d for d in details[:MAX_DETAILS] if isinstance(d, dict)]
        if isinstance(details, list)
        else []
    )
    return ErrorBody(
        structured=True,
        status=_string(error.get("status")),
        message=_string(error.get("message")),
        reasons=tuple(r for d in entries if (r := _string(d.get("reason")))),
        detail_types=tuple(t for d in entries if (t := _string(d.get("@type")))),
        text=text,
    )
