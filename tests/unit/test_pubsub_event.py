from __future__ import annotations

import base64
import hashlib

import pytest

from callback_relay.errors import EventRejected
from callback_relay.pubsub_event import delivery_from_event, project_from_source, summarize
from harness import cloudevents as events


def test_eventarc_data() -> None:
    _headers, body = events.eventarc_binary(b"hello", "42")
    delivery = delivery_from_event("42", events.SOURCE, body)
    assert (delivery.message_id, delivery.data) == ("42", b"hello")
    assert delivery.subscription
    assert delivery.publish_time
    assert delivery.source_project == "test-project"
    assert base64.b64decode(delivery.replay_record()["data_b64"]) == b"hello"


def test_message_id_falls_back_to_the_event_id() -> None:
    body = {"message": {"data": base64.b64encode(b"x").decode()}}
    assert delivery_from_event("ev-1", None, body).message_id == "ev-1"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "not_pubsub"),
        ("text", "not_pubsub"),
        ({"message": "x"}, "not_pubsub"),
        ({"message": {"attributes": {"a": "b"}}}, "no_data"),
        ({"message": {"data": ""}}, "no_data"),
        ({"message": {"data": "!!not base64!!"}}, "bad_base64"),
    ],
)
def test_events_without_a_usable_message(data: object, reason: str) -> None:
    with pytest.raises(EventRejected) as caught:
        delivery_from_event("1", events.SOURCE, data)
    assert caught.value.reason == reason
    assert caught.value.replay


def test_project_from_source() -> None:
    assert project_from_source("//pubsub.googleapis.com/projects/p-1/topics/t") == "p-1"
    assert project_from_source("//pubsub.googleapis.com/") is None
    assert project_from_source(None) is None


def test_the_replay_summary_identifies_a_huge_message() -> None:
    _headers, body = events.eventarc_binary(b"x" * 100_000, "9" * 5000)
    delivery = delivery_from_event("9" * 5000, events.SOURCE, body)
    summary = delivery.replay_summary()
    assert summary["truncated"] is True
    assert summary["data_bytes"] == 100_000
    assert summary["data_sha256"] == hashlib.sha256(b"x" * 100_000).hexdigest()
    assert summary["subscription"] == events.SUBSCRIPTION
    assert summary["publish_time"] == events.PUBLISH_TIME
    assert summary["message_id"].startswith("9" * 512)
    assert len(summary["message_id"]) < 700


def test_non_string_fields_become_text() -> None:
    body = {
        "message": {
            "data": base64.b64encode(b"x").decode(),
            "messageId": 42,
            "attributes": {"a": {"nested": [1]}, "b": "c"},
            "publishTime": {"not": "a time"},
        }
    }
    delivery = delivery_from_event(None, None, body)
    assert delivery.message_id == "42"
    assert delivery.attributes == {"a": '{"nested": [1]}', "b": "c"}
    assert delivery.publish_time is None


def test_summarize_cuts_every_value() -> None:
    summary = summarize({"message_id": "9" * 5000, "attributes": {"a": "b" * 5000}, "n": 3})
    assert summary["truncated"] is True
    assert summary["message_id"].startswith("9" * 512)
    assert len(summary["message_id"]) < 700
    assert len(summary["attributes"]) < 700
    assert summary["n"] == 3


@pytest.mark.parametrize(
    ("attempt", "read"),
    [(3, 3), (0, 0), (None, None), ("3", None), (True, None), (-1, None), (2.0, None)],
)
def test_the_delivery_attempt_is_read_when_it_is_a_count(attempt: object, read: object) -> None:
    body = events.raw_push(b"x", "7")
    body["deliveryAttempt"] = attempt
    assert delivery_from_event("7", events.SOURCE, body).delivery_attempt == read


def test_the_delivery_attempt_is_kept_out_of_the_replay_record() -> None:
    # A replay is a new publish: the count of its old deliveries is no part of it.
    delivery = delivery_from_event("7", None, events.raw_push(b"x", "7", delivery_attempt=4))
    assert delivery.delivery_attempt == 4
    assert "delivery_attempt" not in delivery.replay_record()
