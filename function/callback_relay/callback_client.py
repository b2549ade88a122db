"""Sends one callback request, retrying transient failures within a deadline.

One pooled ``requests.Session`` per process: keep-alive saves a TLS handshake
per message. Redirects are never followed, cookies are never kept and the
environment (proxies, .netrc) is ignored, so the token only ever goes to the
URL that the policy accepted.
"""

from __future__ import annotations

import dataclasses
import http.cookiejar
import os
import random
import time
from collections.abc import Callable

import requests
import requests.adapters

from callback_relay.access_token import AccessTokenProvider
from callback_relay.callback_response import Classification, Kind, classify_response
from callback_relay.errors import DeliveryDeferred, TokenUnavailable

BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 8.0
MAX_RESPONSE_BYTES = 64 * 1024


def build_session(pool_size: int) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    # trust_env=False also drops REQUESTS_CA_BUNDLE; keep that one, for local TLS fakes.
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or True
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    # Redirects are refused per request (allow_redirects=False). Do not also set
    # max_redirects=0: requests then raises TooManyRedirects on any 3xx.
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=4, pool_maxsize=pool_size, max_retries=0
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    classification: Classification
    attempts: int
    latency_ms: float


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

    def backoff_seconds(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter, never shorter than Retry-After."""
        ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
        delay = self.jitter(0.0, ceiling)
        return max(delay, retry_after or 0.0)

    def _attempt(
        self, method: str, url: str, body: bytes | None, idempotency_key: str, remaining: float
    ) -> Classification:
        try:
            token = self.tokens.token(wait_seconds=remaining)
        except TokenUnavailable as exc:
            return Classification(Kind.TRANSIENT, f"no access token: {exc}")
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": idempotency_key}
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = (
            max(0.001, min(self.connect_timeout_seconds, remaining)),
            max(0.001, min(self.read_timeout_seconds, remaining)),
        )
        try:
            response = self.session.request(
                method, url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            )
        except requests.Timeout:
            return Classification(Kind.TRANSIENT, "timed out")
        except requests.RequestException as exc:
            return Classification(Kind.TRANSIENT, f"connection failed: {type(exc).__name__}")
        # Reading the whole (small) body returns the connection to the pool.
        content = response.content[:MAX_RESPONSE_BYTES]
        classification = classify_response(response.status_code, response.headers, content)
        if response.status_code == 401:
            self.tokens.invalidate(token)
        return classification

    def deliver(
        self, method: str, url: str, body: bytes | None, idempotency_key: str
    ) -> DeliveryResult:
        """Call the callback until a final answer; raise DeliveryDeferred at the deadline."""
        started = self.clock()
        deadline = started + self.deadline_seconds
        attempt = 0
        while True:
            attempt += 1
            classification = self._attempt(
                method, url, body, idempotency_key, deadline - self.clock()
            )
            now = self.clock()
            result = DeliveryResult(classification, attempt, (now - started) * 1000)
            if classification.kind.is_final:
                return result
            delay = self.backoff_seconds(attempt, classification.retry_after_seconds)
            if now + delay >= deadline:
                raise DeliveryDeferred(result)
            self.sleep(delay)
