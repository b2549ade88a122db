from __future__ import annotations

import json
import logging

import pytest

from callback_relay import structured_log


def test_one_json_line_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    logger = structured_log.configure("INFO")
    logger.warning("hello %s", "world", extra={"fields": {"outcome": "x", "n": 1}})
    logger.debug("hidden")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "severity": "WARNING",
        "message": "hello world",
        "outcome": "x",
        "n": 1,
    }


def test_configure_twice_adds_one_handler() -> None:
    structured_log.configure("INFO")
    logger = structured_log.configure("DEBUG")
    handlers = [h for h in logger.handlers if isinstance(h, structured_log.StdoutHandler)]
    assert len(handlers) == 1
    assert logger.level == logging.DEBUG
    structured_log.configure("INFO")


def test_trace_fields_from_traceparent() -> None:
    fields = structured_log.trace_fields(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "proj"
    )
    assert fields == {
        "logging.googleapis.com/trace": "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736",
        "logging.googleapis.com/spanId": "00f067aa0ba902b7",
        "logging.googleapis.com/trace_sampled": False,
    }


@pytest.mark.parametrize(
    ("traceparent", "project"),
    [
        (None, "p"),
        ("garbage", "p"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
    ],
)
def test_no_trace_fields_without_both(traceparent: str | None, project: str | None) -> None:
    assert structured_log.trace_fields(traceparent, project) == {}
