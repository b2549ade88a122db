from __future__ import annotations

import io
import json
import sys

import pytest

from callback_relay import structured_log


def test_one_json_line_per_entry(capsys: pytest.CaptureFixture[str]) -> None:
    log = structured_log.StructuredLog("INFO")
    log.write(structured_log.WARNING, "hello wörld", {"outcome": "x", "n": 1})
    log.write(structured_log.DEBUG, "hidden", {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "severity": "WARNING",
        "message": "hello wörld",
        "outcome": "x",
        "n": 1,
    }


def test_level_threshold() -> None:
    log = structured_log.StructuredLog("WARNING")
    assert not log.enabled(structured_log.INFO)
    assert log.enabled(structured_log.WARNING)
    assert log.enabled(structured_log.ERROR)


def test_a_broken_stdout_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(sys, "stdout", Closed())
    structured_log.StructuredLog("INFO").write(structured_log.ERROR, "lost", {})
