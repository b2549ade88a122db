"""Cold start: import time of each function's module, and time to the first callback.

- Import: a fresh interpreter per sample times ``import main`` (the relay, the
  floor) and the floor's bare dependencies (functions_framework, google.auth,
  requests); samples interleave and the median is reported.
- First callback: from just before the functions-framework process is spawned
  until the answer to the first CloudEvent, sent as soon as the port accepts
  connections. The function answers only after its callback got its 200.
"""

from __future__ import annotations

import http.client
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.events import binary_event, message_data
from harness.ports import LOOPBACK, free_port, port_is_open
from harness.processes import ManagedProcess
from harness.relay_function import REPO
from harness.stack import Stack

TIMED_IMPORT = (
    "import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
)
IMPORT_VARIANTS = {
    "relay: import main": ("relay", "main"),
    "floor: import main": ("floor", "main"),
    "floor deps: functions_framework, google.auth, requests": (
        "floor",
        "functions_framework, google.auth, requests",
    ),
}


def _import_sample(stack: Stack, relay: str, modules: str) -> tuple[float, float]:
    env = stack.function_env(relay, None)
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", TIMED_IMPORT.format(modules=modules)],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    wall = time.perf_counter() - started
    return float(out.stdout.strip().splitlines()[-1]), wall


def import_times(stack: Stack, repeats: int) -> dict[str, Any]:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in IMPORT_VARIANTS}
    for relay, modules in IMPORT_VARIANTS.values():
        _import_sample(stack, relay, modules)  # bytecode caches warm, not measured
    for _ in range(repeats):
        for name, (relay, modules) in IMPORT_VARIANTS.items():
            samples[name].append(_import_sample(stack, relay, modules))
    return {
        name: {
            "import_ms": statistics.median(s[0] for s in values) * 1000,
            "process_ms": statistics.median(s[1] for s in values) * 1000,
            "samples_import_ms": [round(s[0] * 1000, 1) for s in values],
        }
        for name, values in samples.items()
    }


def importtime_profile(stack: Stack, top: int = 15) -> list[tuple[int, str]]:
    """The relay's own modules by cumulative import time (python -X importtime)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import main"],
        env=stack.function_env("relay", None),
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            rows.append((int(parts[1]), parts[2].rstrip()))
        except ValueError:
            continue
    return sorted(rows, reverse=True)[:top]


def first_callback_seconds(stack: Stack, relay: str) -> float:
    stack.reset()
    (url,) = stack.callback_urls(1)
    port = free_port()
    request = binary_event(f"cold-{relay}-{port}", message_data(url, 0), f"{LOOPBACK}:{port}")
    process = ManagedProcess(
        f"cold-{relay}-{port}",
        stack.function_argv(relay, port),
        stack.log_dir / f"cold-{relay}-{port}.log",
        env=stack.function_env(relay, None),
        cwd=REPO,
    )
    started = time.perf_counter()
    process.start()
    try:
        deadline = started + 60
        while not port_is_open(LOOPBACK, port, timeout=0.5):
            if time.perf_counter() > deadline or not process.running():
                raise RuntimeError(f"{relay} did not start; log {process.log_path}")
            time.sleep(0.002)
        with socket.create_connection((LOOPBACK, port), timeout=60) as sock:
            sock.sendall(request)
            response = http.client.HTTPResponse(sock)
            response.begin()
            response.read()
            elapsed = time.perf_counter() - started
    finally:
        process.stop()
    if response.status != 200 or stack.stats()["by_status"].get("200") != 1:
        raise RuntimeError(f"{relay}: first callback not delivered ({response.status})")
    return elapsed


def measure(stack: Stack, repeats: int) -> dict[str, Any]:
    first: dict[str, list[float]] = {"relay": [], "floor": [], "naive": []}
    for index in range(repeats):
        order = list(first) if index % 2 == 0 else list(first)[::-1]
        for relay in order:
            first[relay].append(first_callback_seconds(stack, relay))
    imports = import_times(stack, repeats)
    first_ms: dict[str, dict[str, Any]] = {
        relay: {
            "median_ms": statistics.median(v) * 1000,
            "samples_ms": [round(x * 1000, 1) for x in v],
        }
        for relay, v in first.items()
    }
    relay_import = imports["relay: import main"]["import_ms"]
    floor_import = imports["floor: import main"]["import_ms"]
    deps_import = imports["floor deps: functions_framework, google.auth, requests"]["import_ms"]
    ratios = {
        "relay_import_over_floor_main": relay_import / floor_import,
        "relay_import_over_floor_deps": relay_import / deps_import,
        "relay_first_callback_over_floor": first_ms["relay"]["median_ms"]
        / first_ms["floor"]["median_ms"],
    }
    return {
        "repeats": repeats,
        "imports": imports,
        "first_callback": first_ms,
        "ratios": ratios,
        "goals": {name: value <= 1.10 for name, value in ratios.items()},
        "relay_importtime_top_us": importtime_profile(stack),
    }


def markdown(cold: dict[str, Any]) -> str:
    lines = [
        f"Cold start (median of {cold['repeats']} fresh processes each):",
        "",
        "| what | import ms | whole process ms |",
        "|---|---:|---:|",
    ]
    for name, values in cold["imports"].items():
        lines.append(f"| {name} | {values['import_ms']:.0f} | {values['process_ms']:.0f} |")
    lines += ["", "| relay | spawn to first completed callback, ms |", "|---|---:|"]
    for relay, values in cold["first_callback"].items():
        lines.append(f"| {relay} | {values['median_ms']:.0f} |")
    lines += ["", "| ratio (goal <= 1.10) | value |", "|---|---:|"]
    for name, value in cold["ratios"].items():
        lines.append(f"| {name} | {value:.3f} {'met' if cold['goals'][name] else 'NOT met'} |")
    return "\n".join(lines)
