"""The token source is a peer: wrong-shaped answers, a stuck refresh, proxies, no credentials.

Real google-auth against the loopback fake metadata server.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from callback_relay import structured_log
from callback_relay.access_token import (
    FAILED_REFRESH_HOLD_SECONDS,
    NO_CREDENTIALS_HINT,
    AccessTokenProvider,
)
from callback_relay.errors import TokenUnavailable
from harness.attacker_server import AttackerServer
from harness.fake_metadata_server import WRONG_SHAPES, FakeMetadataServer


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str, dict[str, Any]]] = []

    def write(self, level: int, message: str, fields: dict[str, Any]) -> None:
        self.lines.append((level, message, fields))


@pytest.mark.parametrize("shape", sorted(WRONG_SHAPES))
def test_wrong_shaped_answer_is_one_logged_transient_failure(
    shape: str, metadata_server: FakeMetadataServer, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    log = Lines()
    provider = AccessTokenProvider(clock=lambda: now[0], log=log)
    before = metadata_server.token_requests
    metadata_server.token_shape = shape
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        try:
            provider.token(wait_seconds=5)
        except TokenUnavailable as exc:
            errors.append(str(exc))

    try:
        with caplog.at_level(logging.DEBUG):
            threads = [threading.Thread(target=call) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
    finally:
        metadata_server.token_shape = None
    assert len(errors) == 8, "every caller gets TokenUnavailable, none an exception"
    # One refresh served all eight callers, and it left one log line.
    assert metadata_server.token_requests - before == 1
    assert len(log.lines) == 1
    level, message, fields = log.lines[0]
    assert level == structured_log.WARNING
    assert fields["outcome"] == "token_unavailable"
    secret = metadata_server.issued_tokens[-1]
    secret_part = secret.split("-", 2)[2]  # the random part, whatever encloses it
    written = [message, repr(fields), *errors, caplog.text]
    assert not any(secret_part in text for text in written)
    # The next refresh, after the hold, gets a good token.
    now[0] += FAILED_REFRESH_HOLD_SECONDS
    assert provider.token() in metadata_server.issued_tokens


def test_invalidate_never_waits_for_a_stuck_refresh(metadata_server: FakeMetadataServer) -> None:
    now = [0.0]
    provider = AccessTokenProvider(clock=lambda: now[0], log=Lines())
    first = provider.token()
    now[0] = 3599 - 200  # refresh window: a background refresh starts and gets stuck
    metadata_server.token_gate.clear()
    try:
        assert provider.token() == first
        deadline = time.monotonic() + 5
        while metadata_server.token_requests_waiting != 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        started = time.monotonic()
        provider.invalidate(first)  # a 401 for that token
        invalidated = time.monotonic() - started
        with pytest.raises(TokenUnavailable, match=r"waiting 0\.2 s"):
            provider.token(wait_seconds=0.2)  # what the caller's deadline leaves
        waited = time.monotonic() - started
    finally:
        metadata_server.token_gate.set()
    assert invalidated < 0.05
    assert 0.2 <= waited < 1.0
    assert provider.wait_for_refresh(5)
    assert provider.token() != first


def test_discovery_ignores_proxy_and_netrc(
    metadata_server: FakeMetadataServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login stolen password secret-from-netrc\n")
    netrc.chmod(0o600)
    with AttackerServer() as attacker:
        proxy = f"http://127.0.0.1:{attacker.port}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("NETRC", str(netrc))
        seen = len(metadata_server.authorization_headers)
        provider = AccessTokenProvider(log=Lines())  # discovery (the ping) and refresh
        assert provider.token() in metadata_server.issued_tokens
    assert attacker.received == []
    assert metadata_server.authorization_headers[seen:] == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_credentials_logs_a_hint_at_the_first_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The metadata probe goes to GCE_METADATA_IP, read at each probe: a closed port.
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{_closed_port()}")
    log = Lines()
    provider = AccessTokenProvider(log=log)
    started = time.monotonic()
    with pytest.raises(TokenUnavailable, match="no credentials"):
        provider.token(wait_seconds=20)
    first_failure = time.monotonic() - started
    assert len(log.lines) == 1
    assert NO_CREDENTIALS_HINT in log.lines[0][1]
    # The failure is held: the next caller learns it at once, without probing again.
    started = time.monotonic()
    with pytest.raises(TokenUnavailable, match="no credentials"):
        provider.token(wait_seconds=20)
    assert time.monotonic() - started < 0.1
    assert len(log.lines) == 1
    assert first_failure < 10  # google-auth's probe: 3 tries with backoff


def test_wrong_shape_can_be_set_over_http(metadata_server: FakeMetadataServer) -> None:
    """What other processes (the local stack, the soak) use to pick a shape."""
    control = f"http://{metadata_server.host}/_fake/shape"
    session = requests.Session()
    session.trust_env = False
    try:
        assert session.get(f"{control}?name=list", timeout=5).status_code == 200
        assert metadata_server.token_shape == "list"
        assert session.get(f"{control}?name=nonsense", timeout=5).status_code == 400
        assert metadata_server.token_shape == "list"
    finally:
        assert session.get(f"{control}?name=", timeout=5).status_code == 200
    assert metadata_server.token_shape is None
