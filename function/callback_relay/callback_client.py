"""Sends one callback request, retrying transient failures within a deadline.

One pooled ``requests.Session`` per process: keep-alive saves a TLS handshake
per message. Redirects are never followed, cookies are never kept and the
environment (proxies, .netrc) is ignored, so the token only ever goes to the
URL that the policy accepted.

Each attempt is bounded as a whole, not per socket read: a watchdog ends it at
the retry deadline (``attempt_deadline``), and at most ``MAX_RESPONSE_BYTES``
of the answer are read (``response_body``).
"""

from __future__ import annotations

import dataclasses
import functools
import http.client
import http.cookiejar
import math
import random
import time
from collections.abc import Callable
from typing import Protocol

import requests
import urllib3.exceptions

from callback_relay.access_token import AccessTokenProvider
from callback_relay.attempt_deadline import DeadlineAdapter, DeadlineWatchdog
from callback_relay.callback_response import (
    Classification,
    DeliveryResult,
    Kind,
    classify_response,
)
from callback_relay.errors import DeliveryDeferred, DeliveryExpired, TokenUnavailable
from callback_relay.response_body import (
    ACCEPT_ENCODING,
    MAX_RESPONSE_BYTES,
    decode_capped,
    read_capped,
)

__all__ = [
    "MAX_RESPONSE_BYTES",
    "CallbackClient",
    "CallbackSender",
    "DeliveryDeferred",
    "DeliveryExpired",
    "build_session",
]

BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 8.0
# Errors of a broken or stopped connection while the answer is read.
_READ_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
# The result of a delivery that expired before its first call.
_NOT_SENT = Classification(Kind.TRANSIENT, "not sent")


def build_session(pool_size: int, ca_bundle: str | None = None) -> requests.Session:
    """The pooled session; ``ca_bundle`` replaces the system CAs (local TLS fakes)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_bundle or True
    session.headers["Accept-Encoding"] = ACCEPT_ENCODING
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    # Redirects are refused per request (allow_redirects=False). Do not also set
    # max_redirects=0: requests then raises TooManyRedirects on any 3xx.
    adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class CallbackSender(Protocol):
    """What the relay needs of a client: ``CallbackClient``, or a test's or a dry run's double."""

    def deliver(
        self,
        method: str,
        url: str,
        body: bytes | None,
        idempotency_key: str,
        expires_in_seconds: float | None = None,
    ) -> DeliveryResult: ...


@dataclasses.dataclass
class CallbackClient:
    session: requests.Session
    tokens: AccessTokenProvider
    deadline_seconds: float
    connect_timeout_seconds: float
    read_timeout_seconds: float
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    jitter: Callable[[float, float], float] = random.uniform
    watchdog: DeadlineWatchdog = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.watchdog = DeadlineWatchdog(self.clock)

    def backoff_seconds(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter, never shorter than Retry-After."""
        ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
        delay = self.jitter(0.0, ceiling)
        return max(delay, retry_after or 0.0)

    def _attempt(
        self,
        method: str,
        url: str,
        body: bytes | None,
        idempotency_key: str,
        deadline: float,
        not_after: float,
    ) -> Classification | None:
        """One call, or None when the message expired before it could be sent."""
        try:
            token = self.tokens.token(wait_seconds=min(deadline, not_after) - self.clock())
        except TokenUnavailable as exc:
            return Classification(Kind.TRANSIENT, f"no access token: {exc}")
        now = self.clock()
        if now >= not_after:
            return None  # the token came too late: nothing is sent after expires_at
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": idempotency_key}
        if body is not None:
            headers["Content-Type"] = "application/json"
        remaining = deadline - now
        timeout = (
            # A new connection starts no call later than expires_at.
            max(0.001, min(self.connect_timeout_seconds, remaining, not_after - now)),
            max(0.001, min(self.read_timeout_seconds, remaining)),
        )
        with self.watchdog.attempt(deadline) as attempt:
            try:
                response = self.session.request(
                    method,
                    url,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                    stream=True,
                )
            except requests.RequestException as exc:
                return _failed(exc, attempt.expired)
            try:
                raw, whole = read_capped(functools.partial(response.raw.read, decode_content=False))
            except _READ_ERRORS as exc:
                response.close()
                return _failed(exc, attempt.expired)
        if attempt.cut:
            # The deadline shut the connection while this attempt held it: what
            # was parsed may have ended at that shutdown, not at the peer's end
            # of message (http.client reads headers cut short as complete). An
            # answer read whole went back to the pool first, and is kept.
            response.close()
            return _failed(TimeoutError(), expired=True)
        if not whole:
            # Close instead of draining what is left; a body read whole has
            # already gone back to the pool with its connection.
            response.close()
        content, decoded = decode_capped(raw, response.headers.get("Content-Encoding"))
        classification = classify_response(
            response.status_code, response.headers, content, whole and decoded
        )
        if response.status_code == 401:
            self.tokens.invalidate(token)
        return classification

    def deliver(
        self,
        method: str,
        url: str,
        body: bytes | None,
        idempotency_key: str,
        expires_in_seconds: float | None = None,
    ) -> DeliveryResult:
        """Call the callback until a final answer.

        Raises DeliveryDeferred when the retry deadline ends the retries, and
        DeliveryExpired when ``expires_in_seconds`` (the message's expires_at)
        does first: no attempt starts, and no backoff sleeps, past it.
        """
        started = self.clock()
        deadline = started + self.deadline_seconds
        not_after = math.inf if expires_in_seconds is None else started + expires_in_seconds
        attempt = 0
        result = DeliveryResult(_NOT_SENT, 0, 0.0)
        while True:
            classification = self._attempt(method, url, body, idempotency_key, deadline, not_after)
            now = self.clock()
            if classification is None:
                latency_ms = (now - started) * 1000
                raise DeliveryExpired(dataclasses.replace(result, latency_ms=latency_ms))
            attempt += 1
            result = DeliveryResult(classification, attempt, (now - started) * 1000)
            if classification.kind.is_final:
                return result
            delay = self.backoff_seconds(attempt, classification.retry_after_seconds)
            if now + delay >= not_after and not_after <= deadline:
                raise DeliveryExpired(result)
            if now + delay >= deadline:
                raise DeliveryDeferred(result)
            self.sleep(delay)


def _failed(exc: Exception, expired: bool) -> Classification:
    if expired:
        return Classification(Kind.TRANSIENT, "timed out: the retry deadline ended the attempt")
    if isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError):
        return Classification(Kind.TRANSIENT, "timed out")
    return Classification(Kind.TRANSIENT, f"connection failed: {type(exc).__name__}")
