"""The token provider with real google-auth against the fake metadata server."""

from __future__ import annotations

import datetime
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from callback_relay import access_token
from callback_relay.access_token import (
    EARLY_REFRESH_RETRY_SECONDS,
    EXPIRY_SAFETY_SECONDS,
    FAILED_REFRESH_HOLD_SECONDS,
    AccessTokenProvider,
)
from callback_relay.errors import TokenUnavailable
from harness.fake_metadata_server import FakeMetadataServer


def test_concurrent_callers_fetch_the_token_once(metadata_server: FakeMetadataServer) -> None:
    metadata_server.token_delay_seconds = 0.2  # keep every thread waiting on one fetch
    try:
        provider = AccessTokenProvider()
        before = metadata_server.token_requests
        barrier = threading.Barrier(32)
        tokens: list[str] = []

        def call() -> None:
            barrier.wait()
            tokens.append(provider.token())

        threads = [threading.Thread(target=call) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        metadata_server.token_delay_seconds = 0.0
    assert len(tokens) == 32
    assert len(set(tokens)) == 1
    assert metadata_server.token_requests - before == 1
    assert tokens[0] in metadata_server.issued_tokens


class Lines:
    """A log writer that keeps what it is given."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str, dict[str, Any]]] = []

    def write(self, level: int, message: str, fields: dict[str, Any]) -> None:
        self.lines.append((level, message, fields))


def test_token_is_reused_until_near_expiry(metadata_server: FakeMetadataServer) -> None:
    now = [1000.0]
    provider = AccessTokenProvider(clock=lambda: now[0])
    before = metadata_server.token_requests
    first = provider.token()
    now[0] += 3599 - 301  # the fake's tokens live 3599 s; refreshed 300 s early
    assert provider.token() == first
    now[0] += 2
    # Inside the refresh window: still the valid token, refreshed in the background.
    assert provider.token() == first
    assert provider.wait_for_refresh(5)
    second = provider.token()
    assert second != first
    assert metadata_server.token_requests - before == 2


def test_short_lived_token_is_refreshed_at_half_life(metadata_server: FakeMetadataServer) -> None:
    metadata_server.token_lifetime_seconds = 60
    try:
        now = [0.0]
        provider = AccessTokenProvider(clock=lambda: now[0])
        first = provider.token()
        now[0] = 29
        assert provider.token() == first
        now[0] = 31
        assert provider.token() == first  # served while the refresh runs
        assert provider.wait_for_refresh(5)
        assert provider.token() != first
    finally:
        metadata_server.token_lifetime_seconds = 3599


def test_invalidate_forces_a_new_token(metadata_server: FakeMetadataServer) -> None:
    provider = AccessTokenProvider()
    first = provider.token()
    provider.invalidate("some-other-token")
    assert provider.token() == first
    provider.invalidate(first)
    assert provider.token() != first


def test_metadata_failure_is_token_unavailable(metadata_server: FakeMetadataServer) -> None:
    now = [0.0]
    provider = AccessTokenProvider(clock=lambda: now[0], log=Lines())
    metadata_server.fail_token_requests(1, status=403)
    with pytest.raises(TokenUnavailable) as caught:
        provider.token()
    assert "RefreshError" in str(caught.value)
    now[0] += FAILED_REFRESH_HOLD_SECONDS
    assert provider.token() in metadata_server.issued_tokens


class _Credentials:
    def __init__(self) -> None:
        self.token: str | None = None
        self.expiry: datetime.datetime | None = None

    def refresh(self, request: object) -> None:
        self.token = None


def test_refresh_without_a_token_is_unavailable() -> None:
    with pytest.raises(TokenUnavailable):
        AccessTokenProvider(credentials_factory=_Credentials).token()


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_refresh_in_progress_does_not_hold_up_a_valid_token(
    metadata_server: FakeMetadataServer,
) -> None:
    now = [0.0]
    provider = AccessTokenProvider(clock=lambda: now[0])
    first = provider.token()
    before = metadata_server.token_requests
    now[0] = 3599 - 200  # inside the refresh window, far from expiry
    metadata_server.token_gate.clear()
    try:
        # The caller that starts the refresh does not wait for it either.
        assert provider.token() == first
        _wait_until(lambda: metadata_server.token_requests_waiting == 1)
        # The refresh is stuck in the metadata server; other callers are not.
        reader_tokens: list[str] = []
        reader = threading.Thread(target=lambda: reader_tokens.append(provider.token()))
        reader.start()
        reader.join(1.0)
        assert not reader.is_alive(), "a caller with a valid token waited for the refresh"
        assert reader_tokens == [first]
    finally:
        metadata_server.token_gate.set()
    assert provider.wait_for_refresh(5)
    assert provider.token() != first
    assert provider.token() in metadata_server.issued_tokens
    assert metadata_server.token_requests - before == 1


def test_failed_early_refresh_keeps_the_valid_token(metadata_server: FakeMetadataServer) -> None:
    now = [0.0]
    provider = AccessTokenProvider(clock=lambda: now[0])
    first = provider.token()
    before = metadata_server.token_requests
    now[0] = 3599 - 200
    metadata_server.fail_token_requests(5, status=403)  # 403: google-auth does not retry it
    try:
        assert provider.token() == first
        assert provider.wait_for_refresh(5)
        tried = metadata_server.token_requests - before
        assert tried >= 1
        # No new attempt on every call: the next one waits EARLY_REFRESH_RETRY_SECONDS.
        assert provider.token() == first
        assert metadata_server.token_requests - before == tried
    finally:
        metadata_server.fail_token_requests(0)
    now[0] += EARLY_REFRESH_RETRY_SECONDS + 1
    assert provider.token() == first
    assert provider.wait_for_refresh(5)
    assert provider.token() != first


def test_a_token_near_expiry_is_never_sent(metadata_server: FakeMetadataServer) -> None:
    now = [0.0]
    provider = AccessTokenProvider(clock=lambda: now[0])
    first = provider.token()
    now[0] = 3599 - EXPIRY_SAFETY_SECONDS + 1
    metadata_server.fail_token_requests(5, status=403)  # 403: google-auth does not retry it
    try:
        with pytest.raises(TokenUnavailable):
            provider.token()
    finally:
        metadata_server.fail_token_requests(0)
    now[0] += FAILED_REFRESH_HOLD_SECONDS
    assert provider.token() != first


def test_caller_without_a_token_waits_a_bounded_time(metadata_server: FakeMetadataServer) -> None:
    provider = AccessTokenProvider(wait_seconds=0.3)
    metadata_server.token_gate.clear()
    try:
        started = time.monotonic()
        # The caller that starts the refresh is bounded too: the refresh runs on.
        with pytest.raises(TokenUnavailable, match=r"waiting 0\.3 s"):
            provider.token()
        _wait_until(lambda: metadata_server.token_requests_waiting == 1)
        # The callback client passes what is left of its retry deadline.
        with pytest.raises(TokenUnavailable, match=r"waiting 0\.05 s"):
            provider.token(wait_seconds=0.05)
        assert time.monotonic() - started < 2.0
    finally:
        metadata_server.token_gate.set()
    assert provider.wait_for_refresh(5)
    assert provider.token() in metadata_server.issued_tokens


class CountingCredentials:
    """Credentials whose refresh takes a while and counts how often it ran."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.expiry: datetime.datetime | None = None
        self.refreshes = 0
        self._lock = threading.Lock()

    def refresh(self, request: object) -> None:
        with self._lock:
            self.refreshes += 1
        time.sleep(0.05)
        self.token = f"ya29.token-{self.refreshes}"
        self.expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)


def test_first_callers_forced_to_interleave_start_one_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Threads switch every microsecond instead of every 5 ms, and each one that
    # starts a refresh pauses while it does: any caller not excluded from that
    # moment would start a refresh of its own.
    class SlowToStart(access_token._Refresh):
        def __post_init__(self) -> None:
            time.sleep(0.002)

    monkeypatch.setattr(access_token, "_Refresh", SlowToStart)
    previous = sys.getswitchinterval()
    credentials = CountingCredentials()
    provider = AccessTokenProvider(credentials_factory=lambda: credentials)
    barrier = threading.Barrier(16)
    tokens: list[str] = []

    def call() -> None:
        barrier.wait()
        tokens.append(provider.token(wait_seconds=5))

    threads = [threading.Thread(target=call) for _ in range(16)]
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        sys.setswitchinterval(previous)
    assert tokens == ["ya29.token-1"] * 16
    assert credentials.refreshes == provider.refresh_count == 1
