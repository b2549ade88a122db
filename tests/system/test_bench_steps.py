"""bench.steps runs and reports every step with a positive time (a smoke test, not a timing)."""

from __future__ import annotations

import pytest

from bench import steps


def test_bench_steps_reports_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert steps.main(["--number", "20", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names == [
        "log line",
        "JSON decode of the data",
        "parse message (all checks)",
        "decode event",
        "URL policy",
        "all of the above",
    ]
    for row in rows[1:]:
        relay_us = float(row.split("|")[2])
        assert relay_us > 0
    # No log line of the timed steps leaked into the report.
    assert '"severity"' not in out
