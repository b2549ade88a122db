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


def lines_of(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_lone_surrogates_do_not_lose_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    log = structured_log.StructuredLog("INFO")
    log.write(structured_log.ERROR, "bad \ud800", {"message_id": "m\udfff", "n": 1})
    (line,) = lines_of(capsys)
    entry = json.loads(line.encode("utf-8").decode("utf-8"))
    assert entry["message_id"] == "m\ufffd"
    assert entry["message"] == "bad \ufffd"


def test_an_oversized_line_keeps_the_summary_and_is_marked_truncated(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = structured_log.StructuredLog("INFO")
    fields = {
        "outcome": "message_rejected",
        "message_id": "7" * 200_000,
        "replay": {"data_b64": "A" * 300_000},
        "metadata": {"k": ["v" * 100] * 1000},
    }
    log.write(structured_log.ERROR, "x" * 100_000, fields, lambda: {"truncated": True, "id": 1})
    (line,) = lines_of(capsys)
    assert len(line.encode()) + 1 <= structured_log.MAX_LINE_BYTES
    entry = json.loads(line)
    assert entry["truncated"] is True
    assert entry["replay"] == {"truncated": True, "id": 1}
    assert entry["message_id"].startswith("7" * 1000)
    assert entry["metadata"]["truncated"] is True
    assert entry["metadata"]["sha256"]


def test_many_large_fields_still_fit(capsys: pytest.CaptureFixture[str]) -> None:
    log = structured_log.StructuredLog("INFO")
    # Control characters escape to six bytes each.
    fields = {f"f{i}": "\x01" * 5000 for i in range(40)}
    log.write(structured_log.ERROR, "m", {"outcome": "o", "message_id": "id", **fields})
    (line,) = lines_of(capsys)
    assert len(line.encode()) + 1 <= structured_log.MAX_LINE_BYTES
    assert json.loads(line)["message_id"] == "id"


def test_small_lines_are_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    log = structured_log.StructuredLog("INFO")
    log.write(structured_log.INFO, "ok", {"replay": {"a": "b" * 1000}}, lambda: {"no": 1})
    assert json.loads(lines_of(capsys)[0])["replay"] == {"a": "b" * 1000}


# -- issue 17: one line is one line for every reader, and the limit is in bytes --------

# Every character str.splitlines() ends a line at.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_no_field_can_split_a_line_for_splitlines(capsys: pytest.CaptureFixture[str]) -> None:
    log = structured_log.StructuredLog("INFO")
    text = "a".join(LINE_BREAKS)
    log.write(structured_log.ERROR, text, {"reason": text, "metadata": {text: [text]}})
    out = capsys.readouterr().out
    (line,) = out.splitlines()  # the strictest reader: 10 kinds of line break
    assert out == line + "\n"
    entry = json.loads(line)
    assert entry["message"] == entry["reason"] == text
    assert entry["metadata"] == {text: [text]}


def test_a_cut_string_says_it_was_cut_and_how_long_it_was(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = structured_log.StructuredLog("INFO")
    log.write(structured_log.ERROR, "m", {"outcome": "o", "reason": "r" * 100_000})
    (line,) = lines_of(capsys)
    reason = json.loads(line)["reason"]
    assert reason == "r" * 2048 + "...[truncated from 100000 chars]"


@pytest.mark.parametrize("char", ["\u00e9", "\u20ac", "\U0001f600"])  # 2, 3 and 4 bytes
def test_the_line_limit_is_in_bytes_not_characters(
    char: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log = structured_log.StructuredLog("INFO")
    # Fewer characters than MAX_LINE_BYTES, more bytes than it.
    count = structured_log.MAX_LINE_BYTES // 2 + 1000
    log.write(structured_log.ERROR, "m", {"outcome": "o", "reason": char * count})
    (line,) = lines_of(capsys)
    assert len(line) < structured_log.MAX_LINE_BYTES
    assert len(line.encode("utf-8")) + 1 <= structured_log.MAX_LINE_BYTES
    assert json.loads(line)["truncated"] is True
