"""Which Firestore client the relay's store uses, by measurement (docs/events.md).

Two candidates, each doing the store's one operation (read a document, then write
it back only if nobody changed it since) on the Firestore emulator:

- **REST** through the relay's own session (callback_relay.event_store): a batchGet,
  then a commit with an ``updateTime`` precondition;
- **google-cloud-firestore** (gRPC): a read-write transaction, ``transaction.get``
  then ``transaction.set``, committed by the library.

Printed: the import time and peak RSS of a fresh interpreter importing each
(against google.auth + requests, which the relay imports anyway), and the median
and p99 wall time and the CPU per operation, uncontended, in one process.
google-cloud-firestore is installed for this script only, into a folder of its own
(pip --target) that only its measuring subprocesses see: in .venv its typed
``google.cloud`` namespace would hide google-cloud-pubsub's from mypy.

    .venv/bin/python -m bench.firestore_client [--operations 300] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "function"))

from harness.firestore_emulator import firestore_emulator
from harness.relay_function import REPO

LIBRARY = "google-cloud-firestore==2.34.1"
IMPORTS = {
    "google.auth + requests (baseline)": "import google.auth.transport.requests, requests",
    "+ REST store (callback_relay.event_store)": (
        "import google.auth.transport.requests, requests, callback_relay.keyed_waits"
    ),
    "+ google-cloud-firestore": (
        "import google.auth.transport.requests, requests; from google.cloud import firestore"
    ),
}
SAMPLE = (
    "import resource, time; t = time.perf_counter(); {imports}; "
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
)


def library_path() -> Path:
    """A folder holding google-cloud-firestore, installed there once."""
    target = Path(tempfile.gettempdir()) / "bench-google-cloud-firestore"
    if not (target / "google" / "cloud" / "firestore").is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), LIBRARY],
            check=True,
            timeout=600,
        )
    return target


def measuring_env(library: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO / 'function'}:{REPO}:{library}"}


def import_costs(repeats: int, library: Path) -> dict[str, dict[str, float]]:
    env = measuring_env(library)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in IMPORTS}
    for _ in range(repeats + 1):  # the first round warms the bytecode caches
        for name, imports in IMPORTS.items():
            out = subprocess.run(
                [sys.executable, "-c", SAMPLE.format(imports=imports)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            ).stdout.split()
            samples[name].append((float(out[0]), float(out[1]) / 1024))
    return {
        name: {
            "import_ms": statistics.median(s[0] for s in values[1:]) * 1000,
            "peak_rss_mib": statistics.median(s[1] for s in values[1:]),
        }
        for name, values in samples.items()
    }


def _percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def rest_operations(address: str, count: int) -> dict[str, float]:
    from callback_relay.callback_client import build_session
    from callback_relay.event_store import FirestoreEventStore

    store = FirestoreEventStore(build_session(4), None, "bench-rest", origin=f"http://{address}")

    def bump(state: Any, _: Any) -> tuple[None, bool, list[Any]]:
        state.next_seq += 1
        return None, True, []

    store.update("relay", "warm", [], bump)
    times = []
    cpu = time.process_time()
    for n in range(count):
        started = time.perf_counter()
        store.update("relay", f"k{n % 10}", [], bump)
        times.append(time.perf_counter() - started)
    return {**_percentiles(times), "cpu_ms_per_op": (time.process_time() - cpu) / count * 1000}


def library_operations(address: str, count: int) -> dict[str, float]:
    os.environ["FIRESTORE_EMULATOR_HOST"] = address
    from google.cloud import firestore

    client = firestore.Client(project="bench-library")

    @firestore.transactional  # type: ignore[untyped-decorator]
    def bump(transaction: Any, ref: Any) -> None:
        snapshot = ref.get(transaction=transaction)
        value = (snapshot.to_dict() or {}).get("n", 0) if snapshot.exists else 0
        transaction.set(ref, {"n": value + 1})

    bump(client.transaction(), client.collection("c").document("warm"))
    times = []
    cpu = time.process_time()
    for n in range(count):
        started = time.perf_counter()
        bump(client.transaction(), client.collection("c").document(f"k{n % 10}"))
        times.append(time.perf_counter() - started)
    return {**_percentiles(times), "cpu_ms_per_op": (time.process_time() - cpu) / count * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--operations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    library = library_path()
    imports = import_costs(args.repeats, library)
    with firestore_emulator(Path(tempfile.mkdtemp(prefix="bench-firestore-"))) as emulator:
        # Each in a process of its own, so that neither pays for the other's imports.
        ops = {}
        for name in ("rest", "library"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.firestore_client",
                    "--op",
                    name,
                    emulator.address,
                    str(args.operations),
                ],
                env=measuring_env(library),
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            ops[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print("| import (fresh interpreter, median) | ms | peak RSS MiB |\n|---|---:|---:|")
    for name, cost in imports.items():
        print(f"| {name} | {cost['import_ms']:.0f} | {cost['peak_rss_mib']:.1f} |")
    print(
        "\n| read + conditional write, uncontended, on the emulator | p50 ms | p99 ms |"
        " CPU ms/op |\n|---|---:|---:|---:|"
    )
    for name, label in (("rest", "REST, relay's session"), ("library", "google-cloud-firestore")):
        o = ops[name]
        print(f"| {label} | {o['p50_ms']:.2f} | {o['p99_ms']:.2f} | {o['cpu_ms_per_op']:.2f} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--op":
        run = rest_operations if sys.argv[2] == "rest" else library_operations
        print(json.dumps(run(sys.argv[3], int(sys.argv[4]))))
        sys.exit(0)
    sys.exit(main())
