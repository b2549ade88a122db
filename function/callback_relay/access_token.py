"""One OAuth2 access token per process, shared by every thread.

google-auth credentials are not safe to refresh from several threads at once,
so a refresh runs under a lock. The lock is never in the way of a token that
still works: reads of a fresh token take no lock, and once the token enters
its refresh window one thread refreshes it while every other thread goes on
using the cached token. Only a caller with no usable token waits, and only up
to ``wait_seconds``.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
import requests

from callback_relay.errors import TokenUnavailable

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Refresh this long before expiry (google-auth's own threshold is 3 min 45 s).
REFRESH_MARGIN_SECONDS = 300.0
# Stop sending a token this long before it expires: it must outlive the request.
EXPIRY_SAFETY_SECONDS = 30.0
# After a failed early refresh, keep using the token this long before trying again.
EARLY_REFRESH_RETRY_SECONDS = 5.0
# How long a caller without a usable token waits for another thread's refresh.
DEFAULT_WAIT_SECONDS = 20.0


class CachedToken(NamedTuple):
    """A token with its refresh and expiry times, in monotonic seconds."""

    token: str
    refresh_after: float
    unusable_after: float


class RefreshableCredentials(Protocol):
    token: str | None
    expiry: datetime.datetime | None

    def refresh(self, request: object) -> None: ...


def default_credentials() -> RefreshableCredentials:
    """Application Default Credentials with the cloud-platform scope."""
    credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return credentials


class AccessTokenProvider:
    def __init__(
        self,
        credentials_factory: Callable[[], RefreshableCredentials] = default_credentials,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        self._credentials_factory = credentials_factory
        self._credentials: RefreshableCredentials | None = None
        self._session = session
        self._clock = clock
        self._wait_seconds = wait_seconds
        self._lock = threading.Lock()
        # Replaced atomically, never mutated.
        self._cached: CachedToken | None = None
        self.refresh_count = 0

    def token(self, wait_seconds: float | None = None) -> str:
        """The cached token, refreshed when due; waits at most ``wait_seconds`` for a refresh."""
        cached = self._cached
        now = self._clock()
        if cached is not None and now < cached[1]:
            return cached[0]
        if cached is not None and now < cached[2]:
            return self._refresh_early(cached[0])
        wait = self._wait_seconds if wait_seconds is None else min(wait_seconds, self._wait_seconds)
        if not self._lock.acquire(timeout=max(wait, 0.0)):
            raise TokenUnavailable(f"no token after waiting {wait:g} s for a refresh")
        try:
            cached = self._cached
            if cached is not None and self._clock() < cached[2]:
                return cached[0]
            return self._refresh()
        finally:
            self._lock.release()

    def _refresh_early(self, current: str) -> str:
        """Refresh a token that still works, without making anyone wait for it."""
        if not self._lock.acquire(blocking=False):
            return current  # another thread is refreshing it
        try:
            cached = self._cached
            if cached is None or cached[0] != current:
                # Replaced or invalidated while this thread was not holding the lock.
                if cached is not None and self._clock() < cached[2]:
                    return cached[0]
                return self._refresh()
            try:
                return self._refresh()
            except TokenUnavailable:
                # Still valid: keep using it, and try again a little later.
                retry_at = min(self._clock() + EARLY_REFRESH_RETRY_SECONDS, cached[2])
                self._cached = CachedToken(current, retry_at, cached[2])
                return current
        finally:
            self._lock.release()

    def invalidate(self, token: str) -> None:
        """Drop ``token`` (for example after a 401) so that the next call refreshes."""
        with self._lock:
            if self._cached is not None and self._cached[0] == token:
                self._cached = None

    def _refresh(self) -> str:
        try:
            if self._credentials is None:
                self._credentials = self._credentials_factory()
            request = google.auth.transport.requests.Request(self._session)
            self._credentials.refresh(request)
        except google.auth.exceptions.GoogleAuthError as exc:
            # The exception text carries no token; keep only its type and message.
            raise TokenUnavailable(f"{type(exc).__name__}: {exc}") from None
        token = self._credentials.token
        if not token:
            raise TokenUnavailable("credentials refreshed without a token")
        self.refresh_count += 1
        lifetime = 3600.0
        if self._credentials.expiry is not None:
            utc_now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            lifetime = (self._credentials.expiry - utc_now).total_seconds()
        margin = min(REFRESH_MARGIN_SECONDS, lifetime / 2)
        safety = min(EXPIRY_SAFETY_SECONDS, lifetime / 10)
        now = self._clock()
        self._cached = CachedToken(token, now + lifetime - margin, now + lifetime - safety)
        return token
