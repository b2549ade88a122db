"""The token provider with real google-auth against the fake metadata server."""

from __future__ import annotations

import datetime
import threading

import pytest

from callback_relay.access_token import AccessTokenProvider, TokenUnavailable
from tests.fakes.metadata_server import FakeMetadataServer


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


def test_token_is_reused_until_near_expiry(metadata_server: FakeMetadataServer) -> None:
    now = [1000.0]
    provider = AccessTokenProvider(clock=lambda: now[0])
    before = metadata_server.token_requests
    first = provider.token()
    now[0] += 3599 - 301  # the fake's tokens live 3599 s; refreshed 300 s early
    assert provider.token() == first
    now[0] += 2
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
    provider = AccessTokenProvider()
    metadata_server.fail_token_requests(1, status=403)
    with pytest.raises(TokenUnavailable) as caught:
        provider.token()
    assert "RefreshError" in str(caught.value)
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
