"""An attempt's deadline ends that attempt only, with real threads and a real keep-alive peer.

Issue 17, item 8: an attempt used to remember every connection it had used and
shut them all at its deadline, including one it had already returned to the
pool and another thread had taken since; and it then threw away its own
complete answer. Here one session with a pool of one connection serves two
threads, so the second reuses the first one's connection (checked by the
peer's client port), and the first thread's deadline passes while the second
is reading its answer. Also: a watchdog that has been idle still ends the next
slow attempt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from callback_relay import callback_client
from callback_relay.access_token import AccessTokenProvider
from callback_relay.attempt_deadline import DeadlineWatchdog
from callback_relay.callback_client import CallbackClient, build_session
from callback_relay.callback_response import Kind
from callback_relay.errors import DeliveryDeferred, DeliveryExpired
from callback_relay.response_body import read_capped
from harness.fake_metadata_server import FakeMetadataServer
from harness.hostile_peer import HostilePeer, SlowConnectListener

DRIP = 0.05  # drip-ok sends its 24-byte body in 1.2 s


@pytest.fixture(scope="module")
def peer() -> Iterator[HostilePeer]:
    with HostilePeer(drip_interval=DRIP) as server:
        yield server


def test_a_deadline_never_shuts_a_connection_another_thread_took_from_the_pool(
    peer: HostilePeer,
) -> None:
    session = build_session(1)  # one pooled connection: the second thread must reuse it
    watchdog = DeadlineWatchdog()
    first_done = threading.Event()
    second: dict[str, object] = {}

    def second_thread() -> None:
        first_done.wait(5)
        try:
            response = session.post(peer.callback_url("drip-ok"), data=b"{}", timeout=5)
            second["body"] = response.content
        except requests.RequestException as exc:
            second["error"] = exc

    thread = threading.Thread(target=second_thread)
    thread.start()
    seen = len(peer.requests)
    with watchdog.attempt(time.monotonic() + 0.3) as attempt:
        response = session.post(peer.callback_url("ok"), data=b"{}", stream=True, timeout=5)
        body, whole = read_capped(
            response.raw.read
        )  # read whole: the connection is back in the pool
        first_done.set()
        time.sleep(0.6)  # this attempt's deadline passes while the other thread reads
    thread.join(5)
    assert (body, whole) == (b"{}", True)
    assert attempt.expired
    assert not attempt.cut  # its connection had gone back to the pool: nothing of it was shut
    assert second == {"body": b'{"drip": "fed, slowly."}'}
    ports = [port for _mode, port in peer.requests[seen:]]
    assert len(ports) == 2
    assert ports[0] == ports[1]  # one connection carried both requests


def test_an_attempt_keeps_its_complete_answer_when_its_deadline_passes_after_it(
    peer: HostilePeer, metadata_server: FakeMetadataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = build_session(4)
    client = CallbackClient(session, AccessTokenProvider(session=session), 0.4, 0.3, 0.3)
    client.tokens.token()

    def read_then_stall(read: Callable[[int], bytes]) -> tuple[bytes, bool]:
        answer = read_capped(read)
        time.sleep(0.6)  # past the deadline, after the whole answer arrived
        return answer

    monkeypatch.setattr(callback_client, "read_capped", read_then_stall)
    result = client.deliver("POST", peer.callback_url("ok"), b"{}", "k")
    assert result.classification.kind is Kind.DELIVERED
    assert (result.attempts, result.classification.status) == (1, 200)


def test_a_deadline_still_cuts_an_answer_it_interrupted(
    peer: HostilePeer, metadata_server: FakeMetadataServer
) -> None:
    session = build_session(4)
    client = CallbackClient(session, AccessTokenProvider(session=session), 0.4, 0.3, 0.3)
    client.tokens.token()
    started = time.monotonic()
    with pytest.raises(DeliveryDeferred) as caught:
        client.deliver("POST", peer.callback_url("drip-ok"), b"{}", "k")
    assert time.monotonic() - started < 0.4 + 0.3
    assert caught.value.result.classification.reason == (
        "timed out: the retry deadline ended the attempt"
    )


def test_an_idle_watchdog_still_ends_the_next_slow_attempt(
    peer: HostilePeer, metadata_server: FakeMetadataServer
) -> None:
    session = build_session(4)
    client = CallbackClient(session, AccessTokenProvider(session=session), 0.3, 0.3, 5.0)
    client.tokens.token()
    assert client.deliver("POST", peer.callback_url("ok"), b"{}", "k").attempts == 1
    time.sleep(0.4)  # the watchdog expires nothing and waits with no deadline at all
    outcome: dict[str, object] = {}

    def slow_delivery() -> None:
        try:
            client.deliver("POST", peer.callback_url("drip-body"), b"{}", "k")
        except DeliveryDeferred as exc:
            outcome["reason"] = exc.result.classification.reason

    started = time.monotonic()
    thread = threading.Thread(target=slow_delivery, daemon=True)
    thread.start()
    thread.join(2.0)  # a watchdog that never wakes would leave this hanging for 14 hours
    assert not thread.is_alive(), "the idle watchdog did not end the slow attempt"
    assert time.monotonic() - started < 0.3 + 0.3
    assert outcome == {"reason": "timed out: the retry deadline ended the attempt"}


def test_an_attempt_past_its_deadline_shuts_a_connection_it_starts_using(
    peer: HostilePeer,
) -> None:
    session = build_session(4)
    assert session.post(peer.callback_url("ok"), data=b"{}", timeout=5).content == b"{}"
    watchdog = DeadlineWatchdog()
    with watchdog.attempt(time.monotonic() - 1) as attempt:
        for _ in range(100):  # the watchdog expires it at once, before any request
            if attempt.expired:
                break
            time.sleep(0.01)
        assert attempt.expired
        started = time.monotonic()
        with pytest.raises(requests.RequestException):
            session.post(peer.callback_url("drip-ok"), data=b"{}", timeout=5)
    assert attempt.cut
    assert time.monotonic() - started < 0.5  # not the 1.2 s the drip takes


def test_a_connect_starts_no_call_after_expires_at(metadata_server: FakeMetadataServer) -> None:
    session = build_session(4)
    client = CallbackClient(session, AccessTokenProvider(session=session), 5.0, 2.0, 2.0)
    client.tokens.token()
    started = time.monotonic()
    with SlowConnectListener() as listener, pytest.raises(DeliveryExpired):
        client.deliver("POST", listener.callback_url(), b"{}", "k", expires_in_seconds=0.3)
    # The connect gives up at expires_at, not at its own 2 s timeout: had it completed
    # later, the request would have been sent after expires_at.
    assert time.monotonic() - started < 0.3 + 0.4
