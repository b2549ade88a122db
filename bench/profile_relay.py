"""Where the relay's time per message goes, against the floor's, in one thread.

Starts the loopback stack (fake metadata server, TLS fake Workflows API) as
subprocesses, then calls each function's entry logic in this process for
``--messages`` messages, one at a time, under cProfile, and prints the mean
time per message and the top functions by own time.

    .venv/bin/python -m bench.profile_relay --messages 2000
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import importlib.util
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.events import message_data
from bench.relays import BASELINES
from harness.stack import Stack, loopback_stack


class _Event:
    """Just enough of a CloudEvent for the entry points."""

    def __init__(self, message_id: str, data: bytes) -> None:
        self.attributes = {
            "id": message_id,
            "source": "//pubsub.googleapis.com/projects/bench-project/topics/t",
        }
        self.data = {
            "message": {
                "data": base64.b64encode(data).decode(),
                "messageId": message_id,
                "attributes": {"origin": "bench"},
                "publishTime": "2026-01-01T00:00:00Z",
            },
            "subscription": "projects/bench-project/subscriptions/s",
        }

    def get(self, key: str) -> Any:
        return self.attributes.get(key)

    def get_data(self) -> Any:
        return self.data


def _load(relay: str, stack: Stack) -> Any:
    env = stack.function_env(relay, None)
    for name in (
        "GCE_METADATA_HOST",
        "GCE_METADATA_IP",
        "WORKFLOWS_EMULATOR_HOST",
        "REQUESTS_CA_BUNDLE",
        "CLOUDSDK_CONFIG",
        "LOG_LEVEL",
        "FLOOR_TOKEN",
    ):
        if name in env:
            os.environ[name] = env[name]
    sys.path.insert(0, str(stack.sources[relay][0].parent))
    try:
        spec = importlib.util.spec_from_file_location(f"{relay}_main", stack.sources[relay][0])
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


def profile(relay: str, stack: Stack, count: int, top: int, callers: str | None = None) -> float:
    module = _load(relay, stack)
    stack.reset()
    urls = stack.callback_urls(count + 20)
    events = [_Event(f"p-{relay}-{i}", message_data(u, i)) for i, u in enumerate(urls)]
    for event in events[:20]:  # token, connection, caches
        module.relay(event)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for event in events[20:]:
        module.relay(event)
    profiler.disable()
    elapsed = time.perf_counter() - started
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
    stats.print_stats(top)
    if callers:
        stats.print_callers(callers)
    print(f"== {relay}: {elapsed / count * 1000:.3f} ms per message (under cProfile)")
    print(out.getvalue())
    return elapsed / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_relay")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--relays", default="floor,relay")
    parser.add_argument("--callers", help="also print who calls functions matching this regex")
    args = parser.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    with loopback_stack(log_dir, extra_sources=BASELINES) as stack:
        for relay in args.relays.split(","):
            profile(relay, stack, args.messages, args.top, args.callers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
