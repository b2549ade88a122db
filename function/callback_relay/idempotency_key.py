"""The Idempotency-Key header sent with a callback, derived from the message id.

A message id is data from the publisher (or from a direct HTTP caller), not a
header value: it may hold CR/LF, non-Latin-1 text or 200 KB. requests refuses
such a header before sending, which would look like a transient failure and be
retried until the dead-letter limit. So the id is sent as it is only when it is
a short token of visible ASCII (which every Pub/Sub message id is); anything
else is sent as ``sha256-`` and the hex digest of its UTF-8 bytes, which is
stable across redeliveries of the same message and a valid header value.
https://www.rfc-editor.org/rfc/rfc9110#section-5.5 (field values)
"""

from __future__ import annotations

import hashlib
import re

MAX_KEY_CHARS = 128
_TOKEN_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_CHARS}}}")
DIGEST_PREFIX = "sha256-"


def idempotency_key(message_id: str) -> str:
    """``message_id`` when it is a safe header value, else a digest of it."""
    if _TOKEN_RE.fullmatch(message_id) and not message_id.startswith(DIGEST_PREFIX):
        return message_id
    data = message_id.encode("utf-8", "surrogatepass")
    return DIGEST_PREFIX + hashlib.sha256(data).hexdigest()
