"""Keyed waits under load on the Firestore emulator: nothing lost, nothing twice, how fast.

1,000 waits (100 keys x 10 executions) and 1,000 events (10 per key, kept for
an hour) are shuffled together and sent at once by 8 threads through 4 relays
(4 function instances sharing one database). Afterwards every wait must have been
resumed exactly once. Printed:

- lost (a wait never resumed) and double deliveries (a callback called twice);
- event to resume, for waits resumed by an event that came after them: from the
  start of the event's delivery to its callback call; and wait to resume, for
  waits that found a kept event;
- the relay's CPU per message, keyed event against a direct resume, each measured
  alone in this process (callbacks answered in process by a recorder, so both
  count only the relay's own work, store requests included; the emulator's own CPU
  is not counted).

    .venv/bin/python -m bench.keyed_waits [--keys 100] [--per-key 10] [--threads 8]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "function"))

from callback_relay.errors import RedeliveryRequested
from harness.firestore_emulator import FirestoreEmulator, firestore_emulator
from harness.keyed_relay import FastRelay, RecordingClient, callback_url


def _retrying(task: Any) -> None:
    for _ in range(50):
        try:
            task()
            return
        except RedeliveryRequested:
            time.sleep(random.uniform(0, 0.1))
    raise RuntimeError("a message was never taken")


def mixed_load(
    emulator: FirestoreEmulator, keys: int, per_key: int, threads: int
) -> dict[str, Any]:
    project = emulator.new_project()
    client = RecordingClient()
    relays = [FastRelay(emulator, project, client) for _ in range(4)]
    event_started: dict[int, float] = {}
    wait_started: dict[str, float] = {}
    tasks: list[Any] = []
    waits = {}
    for k in range(keys):
        for e in range(per_key):
            url = callback_url(f"x{k}-{e}", "c")
            waits[url] = f"key-{k}"
    for url, key in waits.items():

        def wait(url: str = url, key: str = key) -> None:
            wait_started.setdefault(url, time.perf_counter())
            random.choice(relays).wait(url, key, f"w-{url}")

        tasks.append(wait)
    for n in range(keys * per_key):

        def event(n: int = n) -> None:
            event_started.setdefault(n, time.perf_counter())
            random.choice(relays).event(f"key-{n % keys}", {"n": n}, f"ev-{n}")

        tasks.append(event)
    random.shuffle(tasks)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(_retrying, t) for t in tasks]:
            future.result()
    elapsed = time.perf_counter() - started
    calls = collections.Counter(url for url, _ in client.calls)
    event_to_resume, wait_to_resume = [], []
    for (url, body), at in zip(client.calls, client.times, strict=True):
        n = body["payload"]["n"]
        if event_started[n] >= wait_started[url]:
            event_to_resume.append(at - event_started[n])
        else:
            wait_to_resume.append(at - wait_started[url])
    conflicts = sum(r.relay.keyed.store.conflicts for r in relays if r.relay.keyed)
    return {
        "waits": len(waits),
        "events": keys * per_key,
        "keys": keys,
        "lost": sum(1 for url in waits if calls[url] == 0),
        "double": sum(1 for count in calls.values() if count > 1),
        "event_to_resume": _ms(event_to_resume),
        "wait_to_resume": _ms(wait_to_resume),
        "seconds": elapsed,
        "conflicts": conflicts,
    }


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def cpu_per_message(emulator: FirestoreEmulator, count: int) -> dict[str, float]:
    """The relay's CPU per direct resume and per keyed event with one waiter."""
    project = emulator.new_project()
    relay = FastRelay(emulator, project, RecordingClient())
    direct = [
        {"callback_url": callback_url(f"d{n}", "c"), "payload": {"n": n}} for n in range(count)
    ]
    for n in range(count):  # one waiter per event, registered beforehand
        relay.wait(callback_url(f"k{n}", "c"), f"cpu-{n}", f"w-{n}")
    cpu = time.process_time()
    for n, data in enumerate(direct):
        relay.deliver(data, f"d-{n}")
    direct_ms = (time.process_time() - cpu) / count * 1000
    cpu = time.process_time()
    for n in range(count):
        relay.event(f"cpu-{n}", {"n": n}, f"e-{n}")
    keyed_ms = (time.process_time() - cpu) / count * 1000
    return {"direct_ms": direct_ms, "keyed_event_ms": keyed_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--per-key", type=int, default=10)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--cpu-messages", type=int, default=300)
    args = parser.parse_args(argv)
    with firestore_emulator(Path(tempfile.mkdtemp(prefix="bench-keyed-"))) as emulator:
        load = mixed_load(emulator, args.keys, args.per_key, args.threads)
        cpu = cpu_per_message(emulator, args.cpu_messages)
    print(json.dumps({"load": load, "cpu": cpu}, indent=2), file=sys.stderr)
    e2r, w2r = load["event_to_resume"], load["wait_to_resume"]
    print("| measure | value |\n|---|---|")
    print(f"| waits / events / keys | {load['waits']} / {load['events']} / {load['keys']} |")
    print(f"| **lost** | {load['lost']} |")
    print(f"| **double deliveries** | {load['double']} |")
    print(
        f"| event to resume (waits resumed by a later event, {e2r.get('count', 0)}) p50 / p99 ms"
        f" | {e2r.get('p50_ms', 0):.0f} / {e2r.get('p99_ms', 0):.0f} |"
    )
    print(
        f"| wait to resume (waits that found a kept event, {w2r.get('count', 0)}) p50 / p99 ms"
        f" | {w2r.get('p50_ms', 0):.0f} / {w2r.get('p99_ms', 0):.0f} |"
    )
    print(f"| whole load, {args.threads} threads, 4 relays | {load['seconds']:.1f} s |")
    print(f"| commits that lost a race and were decided again | {load['conflicts']} |")
    print(
        f"| relay CPU per message: direct resume / keyed event (1 waiter) | "
        f"{cpu['direct_ms']:.2f} / {cpu['keyed_event_ms']:.2f} ms"
        f" (+{cpu['keyed_event_ms'] - cpu['direct_ms']:.2f} ms) |"
    )
    return 0 if load["lost"] == 0 and load["double"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
