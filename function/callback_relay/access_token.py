"""One OAuth2 access token per process, shared by every thread.

google-auth credentials are not safe to refresh from several threads at once,
so the refresh runs under a lock and only when the cached token is near its
expiry. Reads of a fresh token take no lock at all.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from typing import Protocol

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
import requests

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Refresh this long before expiry (google-auth's own threshold is 3 min 45 s).
REFRESH_MARGIN_SECONDS = 300.0


class TokenUnavailable(RuntimeError):
    """No token could be obtained now; the caller should retry later."""


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
    ) -> None:
        self._credentials_factory = credentials_factory
        self._credentials: RefreshableCredentials | None = None
        self._session = session
        self._clock = clock
        self._lock = threading.Lock()
        # (token, monotonic time after which it must be refreshed); replaced atomically.
        self._cached: tuple[str, float] | None = None
        self.refresh_count = 0

    def token(self) -> str:
        cached = self._cached
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        with self._lock:
            cached = self._cached
            if cached is not None and self._clock() < cached[1]:
                return cached[0]
            return self._refresh()

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
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            lifetime = (self._credentials.expiry - now).total_seconds()
        margin = min(REFRESH_MARGIN_SECONDS, lifetime / 2)
        self._cached = (token, self._clock() + lifetime - margin)
        return token
