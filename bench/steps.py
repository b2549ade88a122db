"""Microseconds per message for each step of the relay's own work, with baselines.

Each step runs in this process against its baseline in the same run, so the
ratios hold on a noisy machine: the log line against the same line through the
``logging`` module, message parsing against ``json.loads`` with a keyword
(a new decoder per call), and the whole of the relay's own work against the
floor's decoding. No network: the HTTP call is what bench.run measures.

    .venv/bin/python -m bench.steps
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from bench.events import message_data

# The function's package, as functions-framework puts it on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "function"))
from callback_relay import structured_log
from callback_relay.callback_url_policy import CallbackUrlPolicy
from callback_relay.message import _DECODER, _reject_constant, parse_message_data
from callback_relay.pubsub_event import delivery_from_event

URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/bench-project/locations/us-central1"
    "/workflows/callback-relay-demo/executions/0b0e6c8e-1111-2222-3333-444455556666"
    "/callbacks/7b8545ac-9cf0-474a-93e7-f4a50f14cc0e"
)
FIELDS: dict[str, Any] = {
    "outcome": "delivered",
    "reason": "callback received",
    "message_id": "1234567",
    "attempts": 1,
    "http_status": 200,
    "latency_ms": 2.1,
    "target": {"project": "p", "location": "l", "workflow": "w", "execution": "e" * 36},
}


class _JsonFormatter(logging.Formatter):
    """The same JSON line, produced through the logging module."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"severity": record.levelname, "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry, default=str, ensure_ascii=False)


def _logging_logger(stream: TextIO) -> logging.Logger:
    logger = logging.getLogger("bench.steps.baseline")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter())
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def best_microseconds(step: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(step, number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.steps", description=__doc__)
    parser.add_argument("--number", type=int, default=20000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings; the best is kept")
    args = parser.parse_args(argv)

    data = message_data(URL, 1)
    text = data.decode()
    event: dict[str, Any] = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": "1234567",
            "publishTime": "2026-11-28T12:00:00Z",
        },
        "subscription": "projects/bench-project/subscriptions/s",
    }
    source = "//pubsub.googleapis.com/projects/bench-project/topics/t"
    policy = CallbackUrlPolicy(None, ())
    log = structured_log.StructuredLog("INFO")
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    logger = _logging_logger(devnull)

    def relay_own_work() -> None:
        delivery = delivery_from_event("1234567", source, event)
        message = parse_message_data(delivery.data, 65536)
        policy.check(message.callback_url)
        log.write(structured_log.INFO, "delivered: callback received", FIELDS)

    def floor_decoding() -> None:
        json.loads(base64.b64decode(event["message"]["data"]))

    steps: list[tuple[str, Callable[[], object], Callable[[], object] | None, str]] = [
        (
            "log line",
            lambda: log.write(structured_log.INFO, "delivered: callback received", FIELDS),
            lambda: logger.info("delivered: callback received", extra={"fields": FIELDS}),
            "logging module",
        ),
        (
            "JSON decode of the data",
            lambda: _DECODER.decode(text),
            lambda: json.loads(text, parse_constant=_reject_constant),
            "json.loads(parse_constant=...)",
        ),
        ("parse message (all checks)", lambda: parse_message_data(data, 65536), None, ""),
        ("decode event", lambda: delivery_from_event("1234567", source, event), None, ""),
        ("URL policy", lambda: policy.check(URL), None, ""),
        ("all of the above", relay_own_work, floor_decoding, "the floor's decoding"),
    ]
    real_stdout = sys.stdout
    rows = []
    try:
        sys.stdout = devnull  # both log paths write and flush a real file
        for name, step, baseline, baseline_name in steps:
            ours = best_microseconds(step, args.number, args.repeat)
            base = best_microseconds(baseline, args.number, args.repeat) if baseline else None
            rows.append((name, ours, baseline_name, base))
    finally:
        sys.stdout = real_stdout
        devnull.close()
    print(f"Command: `python -m bench.steps --number {args.number} --repeat {args.repeat}`\n")
    print("| step | relay us | baseline | baseline us | relay / baseline |")
    print("|---|---:|---|---:|---:|")
    for name, ours, baseline_name, base in rows:
        if base is None:
            print(f"| {name} | {ours:.1f} | - | - | - |")
        else:
            print(f"| {name} | {ours:.1f} | {baseline_name} | {base:.1f} | {ours / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
