"""One OAuth2 access token per process, shared by every thread.

The token source is a peer like any other. Each refresh runs in its own
background thread, one at a time (google-auth credentials are not safe to
refresh from several threads at once), and every caller waits for it at most
its own ``wait_seconds``, the refreshing caller included. A caller with a
token that still works never waits: once the token enters its refresh window
it keeps being served while the refresh runs.

Whatever the metadata server answers, a refresh ends in a token or in
``TokenUnavailable`` (transient: retried, then redelivered), logged once per
refresh and never with the token. google-auth raises more than
``GoogleAuthError`` on a malformed answer: ``KeyError`` without ``expires_in``,
``TypeError`` for a string ``expires_in``, a list or a text body,
``OverflowError`` for a huge one (``get_service_account_token`` in
https://github.com/googleapis/google-auth-library-python/blob/main/google/auth/compute_engine/_metadata.py).

Credential discovery gets this module's own session (``trust_env`` off):
without ``request=``, ``google.auth.default()`` builds a session that honours
``HTTP(S)_PROXY`` and ``.netrc`` for its metadata probe
(``_get_gce_credentials`` in
https://github.com/googleapis/google-auth-library-python/blob/main/google/auth/_default.py).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import re
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
import requests

from callback_relay import structured_log
from callback_relay.errors import TokenUnavailable

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Refresh this long before expiry (google-auth's own threshold is 3 min 45 s).
REFRESH_MARGIN_SECONDS = 300.0
# Stop sending a token this long before it expires: it must outlive the request.
EXPIRY_SAFETY_SECONDS = 30.0
# After a failed early refresh, keep using the token this long before trying again.
EARLY_REFRESH_RETRY_SECONDS = 5.0
# Callers without a token share a failed refresh's answer this long (one log line).
FAILED_REFRESH_HOLD_SECONDS = 1.0
# With no credentials at all, each discovery probes the metadata server for seconds.
NO_CREDENTIALS_HOLD_SECONDS = 30.0
# How long a caller without a usable token waits for a refresh.
DEFAULT_WAIT_SECONDS = 20.0
# Access tokens live 3600 s by default and at most 43200 s (12 h):
# https://cloud.google.com/sdk/gcloud/reference/auth/print-access-token
MAX_TOKEN_LIFETIME_SECONDS = 43200.0
# RFC 6750 section 2.1 b64token: what may follow "Bearer " in a header.
_BEARER_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]{1,8192}=*", re.ASCII)
_SECRET_RE = re.compile(r"ya29\.[A-Za-z0-9\-._~+/=]*|\"access_token\"\s*:\s*\"[^\"]*\"?")
NO_CREDENTIALS_HINT = (
    "no credentials: set GCE_METADATA_HOST for a local metadata server, or run on Google Cloud"
)
# What google-auth lets through from a malformed or unreachable token source.
_PEER_ERRORS = (
    google.auth.exceptions.GoogleAuthError,
    requests.RequestException,
    LookupError,
    TypeError,
    ValueError,
    ArithmeticError,
    AttributeError,
    RecursionError,
)


class RefreshableCredentials(Protocol):
    token: str | None
    expiry: datetime.datetime | None

    def refresh(self, request: Any) -> None: ...


class LogWriter(Protocol):
    def write(self, level: int, message: str, fields: dict[str, Any]) -> None: ...


class CachedToken(NamedTuple):
    token: str
    refresh_at: float  # monotonic seconds: refresh in the background from here
    unusable_at: float  # monotonic seconds: never send it from here


@dataclasses.dataclass
class _Refresh:
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    token: str | None = None
    error: str = ""
    hold_seconds: float = FAILED_REFRESH_HOLD_SECONDS
    finished_at: float = 0.0


def default_credentials(request: Any = None) -> RefreshableCredentials:
    """Application Default Credentials with the cloud-platform scope."""
    credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE], request=request)
    return credentials


def private_session() -> requests.Session:
    """A session that reads no proxy, .netrc or CA settings from the environment."""
    session = requests.Session()
    session.trust_env = False
    return session


def _scrub(text: str) -> str:
    return _SECRET_RE.sub("[redacted]", text)[:300]


class AccessTokenProvider:
    def __init__(
        self,
        credentials_factory: Callable[[], RefreshableCredentials] | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        log: LogWriter | None = None,
    ) -> None:
        self._request = google.auth.transport.requests.Request(session or private_session())
        self._credentials_factory = credentials_factory or functools.partial(
            default_credentials, self._request
        )
        self._credentials: RefreshableCredentials | None = None
        self._clock = clock
        self._wait_seconds = wait_seconds
        self._log: LogWriter = log or structured_log.StructuredLog("INFO")
        self._state = threading.Lock()  # held for a few assignments, never across I/O
        self._cached: CachedToken | None = None
        self._refresh: _Refresh | None = None
        self.refresh_count = 0
        self.failure_count = 0

    def token(self, wait_seconds: float | None = None) -> str:
        """The cached token, refreshed when due; waits at most ``wait_seconds`` for a refresh."""
        cached = self._cached
        now = self._clock()
        if cached is not None and now < cached.refresh_at:
            return cached.token
        if cached is not None and now < cached.unusable_at:
            self._start_refresh(EARLY_REFRESH_RETRY_SECONDS)
            return cached.token
        wait = self._wait_seconds if wait_seconds is None else min(wait_seconds, self._wait_seconds)
        wait = max(wait, 0.0)  # a caller past its deadline does not wait at all
        refresh = self._start_refresh(None)
        if not refresh.done.wait(wait):
            raise TokenUnavailable(f"no token after waiting {wait:g} s for a refresh")
        if refresh.token is None:
            raise TokenUnavailable(refresh.error)
        return refresh.token

    def invalidate(self, token: str) -> None:
        """Drop ``token`` (for example after a 401); never waits for a refresh."""
        with self._state:
            if self._cached is not None and self._cached.token == token:
                self._cached = None

    def wait_for_refresh(self, timeout: float) -> bool:
        """Wait until no refresh is running; True if none is."""
        refresh = self._refresh
        return refresh is None or refresh.done.wait(timeout)

    def _start_refresh(self, failed_hold: float | None) -> _Refresh:
        """The running refresh, a recent failed one, or a new one started in the background."""
        with self._state:
            current = self._refresh
            if current is not None:
                if not current.done.is_set():
                    return current
                held = max(current.hold_seconds, failed_hold or 0.0)
                if current.token is None and self._clock() < current.finished_at + held:
                    return current
            refresh = self._refresh = _Refresh()
        threading.Thread(
            target=self._run, args=(refresh,), name="token-refresh", daemon=True
        ).start()
        return refresh

    def _run(self, refresh: _Refresh) -> None:
        try:
            token, lifetime = self._fetch()
        except TokenUnavailable as exc:
            refresh.error = str(exc)
            refresh.hold_seconds = (
                NO_CREDENTIALS_HOLD_SECONDS
                if refresh.error.startswith(NO_CREDENTIALS_HINT)
                else FAILED_REFRESH_HOLD_SECONDS
            )
            self.failure_count += 1
            self._log.write(
                structured_log.WARNING,
                f"access token refresh failed: {refresh.error}",
                {"outcome": "token_unavailable", "refresh_failures": self.failure_count},
            )
        else:
            margin = min(REFRESH_MARGIN_SECONDS, lifetime / 2)
            safety = min(EXPIRY_SAFETY_SECONDS, lifetime / 10)
            now = self._clock()
            with self._state:
                self._cached = CachedToken(token, now + lifetime - margin, now + lifetime - safety)
            self.refresh_count += 1
            refresh.token = token
        finally:
            refresh.finished_at = self._clock()
            refresh.done.set()

    def _fetch(self) -> tuple[str, float]:
        """(token, lifetime in seconds) from the credentials, or TokenUnavailable."""
        try:
            if self._credentials is None:
                self._credentials = self._credentials_factory()
            self._credentials.refresh(self._request)
            token, expiry = self._credentials.token, self._credentials.expiry
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise TokenUnavailable(f"{NO_CREDENTIALS_HINT} ({_scrub(str(exc))})") from None
        except _PEER_ERRORS as exc:
            # Messages can quote the answer; keep the type and a scrubbed, short text.
            raise TokenUnavailable(f"{type(exc).__name__}: {_scrub(str(exc))}") from None
        if not isinstance(token, str) or not _BEARER_TOKEN_RE.fullmatch(token):
            raise TokenUnavailable("the token source answered a token that is not a header value")
        lifetime = 3600.0
        if isinstance(expiry, datetime.datetime):
            utc_now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            if expiry.tzinfo is not None:
                expiry = expiry.astimezone(datetime.UTC).replace(tzinfo=None)
            lifetime = (expiry - utc_now).total_seconds()
        if not 0 < lifetime <= MAX_TOKEN_LIFETIME_SECONDS:
            raise TokenUnavailable(f"the token source answered a lifetime of {lifetime:.0f} s")
        return token, lifetime
