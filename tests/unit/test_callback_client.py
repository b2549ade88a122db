"""Retry timing of the callback client, with a virtual clock."""

from __future__ import annotations

import pytest

from callback_relay.access_token import AccessTokenProvider
from callback_relay.callback_client import (
    BACKOFF_CAP_SECONDS,
    CallbackClient,
    build_session,
)
from callback_relay.errors import DeliveryDeferred, DeliveryExpired
from harness.fake_workflows_api import FakeWorkflowsApi, Fault


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(time: VirtualTime, deadline: float = 30.0) -> CallbackClient:
    session = build_session(4)
    return CallbackClient(
        session=session,
        tokens=AccessTokenProvider(session=session),
        deadline_seconds=deadline,
        connect_timeout_seconds=1,
        read_timeout_seconds=1,
        sleep=time.sleep,
        clock=time.clock,
        jitter=lambda low, high: high,  # the worst case of full jitter
    )


def test_backoff_is_exponential_capped_and_respects_retry_after() -> None:
    client = make_client(VirtualTime())
    assert [client.backoff_seconds(n, None) for n in range(1, 7)] == [
        0.25,
        0.5,
        1.0,
        2.0,
        4.0,
        BACKOFF_CAP_SECONDS,
    ]
    assert client.backoff_seconds(12, None) == BACKOFF_CAP_SECONDS
    assert client.backoff_seconds(1, 5.0) == 5.0


def test_full_jitter_draws_from_zero_to_the_ceiling() -> None:
    draws: list[tuple[float, float]] = []
    client = make_client(VirtualTime())

    def record(low: float, high: float) -> float:
        draws.append((low, high))
        return 0.0

    client.jitter = record
    client.backoff_seconds(3, None)
    assert draws == [(0.0, 1.0)]


def test_gives_up_before_the_deadline(workflows_api: FakeWorkflowsApi) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.fault_picker = lambda call: Fault(503)
    time = VirtualTime()
    with pytest.raises(DeliveryDeferred) as caught:
        make_client(time, deadline=5.0).deliver("POST", url, b"{}", "k")
    # 0.25 + 0.5 + 1 + 2 = 3.75 s slept; the next 4 s would pass the deadline.
    assert time.sleeps == [0.25, 0.5, 1.0, 2.0]
    assert caught.value.result.attempts == 5
    assert len(workflows_api.calls) == 5


def test_retry_after_beyond_the_deadline_stops_at_once(workflows_api: FakeWorkflowsApi) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.faults.append(Fault(503, headers={"Retry-After": "60"}))
    time = VirtualTime()
    with pytest.raises(DeliveryDeferred):
        make_client(time, deadline=30.0).deliver("POST", url, b"{}", "k")
    assert time.sleeps == []
    assert len(workflows_api.calls) == 1


def test_connection_is_reused(workflows_api: FakeWorkflowsApi) -> None:
    client = make_client(VirtualTime())
    for _ in range(5):
        url = workflows_api.create_callback(workflows_api.create_execution())
        assert client.deliver("POST", url, b"{}", "k").classification.status == 200
    # One TCP connection (one client port) carried all five calls.
    assert len({call.client_port for call in workflows_api.calls}) == 1


def test_get_callback_sends_no_body(workflows_api: FakeWorkflowsApi) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution(), method="GET")
    assert make_client(VirtualTime()).deliver("GET", url, None, "k").classification.status == 200
    (call,) = workflows_api.calls
    assert call.body == b""
    assert "Content-Type" not in call.headers


# -- expires_at: no attempt starts, and no backoff sleeps, past it ------------


def test_no_attempt_starts_and_no_backoff_sleeps_past_expires_at(
    workflows_api: FakeWorkflowsApi,
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.fault_picker = lambda call: Fault(503)
    time = VirtualTime()
    with pytest.raises(DeliveryExpired) as caught:
        make_client(time, deadline=30.0).deliver("POST", url, b"{}", "k", expires_in_seconds=1.0)
    # Calls at 0, 0.25 and 0.75 s; the next backoff (1 s) would end past 1.0 s.
    assert time.sleeps == [0.25, 0.5]
    assert len(workflows_api.calls) == caught.value.result.attempts == 3
    assert caught.value.result.classification.status == 503


def test_a_deadline_before_expires_at_still_asks_for_redelivery(
    workflows_api: FakeWorkflowsApi,
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    workflows_api.fault_picker = lambda call: Fault(503)
    with pytest.raises(DeliveryDeferred):
        make_client(VirtualTime(), deadline=5.0).deliver(
            "POST", url, b"{}", "k", expires_in_seconds=5.1
        )


class SlowTokens:
    """A token source whose answer arrives ``seconds`` later on the virtual clock."""

    def __init__(self, time: VirtualTime, seconds: float) -> None:
        self.time = time
        self.seconds = seconds
        self.waits: list[float | None] = []

    def token(self, wait_seconds: float | None = None) -> str:
        self.waits.append(wait_seconds)
        self.time.now += self.seconds
        return "token"

    def invalidate(self, token: str) -> None:
        pass


def test_a_token_that_arrives_after_expires_at_sends_nothing(
    workflows_api: FakeWorkflowsApi,
) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    time = VirtualTime()
    client = make_client(time)
    tokens = SlowTokens(time, 2.0)
    client.tokens = tokens  # type: ignore[assignment]
    with pytest.raises(DeliveryExpired) as caught:
        client.deliver("POST", url, b"{}", "k", expires_in_seconds=1.5)
    assert workflows_api.calls == []
    assert caught.value.result.attempts == 0
    assert tokens.waits == [1.5]  # the wait for a token is capped at expires_at too


def test_an_expired_message_is_not_sent_at_all(workflows_api: FakeWorkflowsApi) -> None:
    url = workflows_api.create_callback(workflows_api.create_execution())
    with pytest.raises(DeliveryExpired):
        make_client(VirtualTime()).deliver("POST", url, b"{}", "k", expires_in_seconds=0.0)
    assert workflows_api.calls == []
