"""Retries for the tools' Pub/Sub calls, bounded by the caller's own time.

The generated clients retry each RPC by default for up to 60 s (600 s for Publish),
and a ``timeout=`` argument does not shorten that: google-api-core's
``TimeToDeadlineTimeout`` gives each attempt the remaining time, and once that
falls under a second it gives the full timeout again, while the default ``Retry``
runs to its own deadline
(https://github.com/googleapis/python-api-core/blob/main/google/api_core/timeout.py).
A tool pointed at an unreachable endpoint then hangs that long, and ends in a
``RetryError``, which is not a ``GoogleAPICallError``. Passing ``retry=`` and
``timeout=`` from here bounds the whole call, retries included, by ``seconds``.
Retry: https://googleapis.dev/python/google-api-core/latest/retry.html
"""

from __future__ import annotations

from typing import Any

# Retried by the generated clients' defaults for Pull, GetSubscription and the like
# (google/pubsub_v1/services/*/transports/base.py in google-cloud-pubsub).
READ_RETRY_CODES = ("Aborted", "InternalServerError", "ServiceUnavailable", "Unknown")
# Publish's default retries these too.
PUBLISH_RETRY_CODES = (*READ_RETRY_CODES, "Cancelled", "DeadlineExceeded", "ResourceExhausted")


def retry_within(seconds: float, codes: tuple[str, ...] = READ_RETRY_CODES) -> Any:
    """A ``google.api_core.retry.Retry`` on ``codes`` that gives up after ``seconds``,
    raising ``RetryError`` (a ``GoogleAPIError``) with the last error as its cause."""
    from google.api_core import exceptions as api_exceptions
    from google.api_core import retry as api_retry

    types = tuple(getattr(api_exceptions, name) for name in codes)
    return api_retry.Retry(
        predicate=api_retry.if_exception_type(*types),
        initial=0.1,
        maximum=min(5.0, seconds),
        multiplier=2.0,
        timeout=seconds,
    )
