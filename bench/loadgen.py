"""Concurrent load generator, run as its own process (no GIL shared with the servers).

Reads a job (JSON file: target host:port, callback URLs, concurrency, time
limit, warm-up count), sends one binary CloudEvent per URL over ``concurrency``
keep-alive connections, and writes per-request latencies as JSON. Stops after
every URL was sent or after the time limit, whichever comes first.

    python -m bench.loadgen JOB.json OUT.json
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench.events import binary_event, message_data
from harness.procstat import cpu_seconds


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes, timeout: float) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            return await asyncio.wait_for(self._exchange(raw), timeout)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            await self.close()
            return -1

    async def _exchange(self, raw: bytes) -> int:
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _phase(
    host: str, port: int, requests: list[bytes], concurrency: int, time_limit: float
) -> dict[str, Any]:
    items: Iterator[tuple[int, bytes]] = iter(enumerate(requests))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    started = time.perf_counter()
    stop_at = started + time_limit
    last_done = started

    async def worker() -> None:
        nonlocal last_done
        connection = Connection(host, port)
        for _index, raw in items:
            if time.perf_counter() >= stop_at:
                break
            t0 = time.perf_counter()
            try:
                status = await connection.request(raw, timeout=60.0)
            except OSError:
                status = -1
            t1 = time.perf_counter()
            latencies.append(t1 - t0)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            last_done = max(last_done, t1)
        await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "sent": len(latencies),
        "elapsed_seconds": last_done - started,
        "latencies_seconds": latencies,
        "statuses": statuses,
    }


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    host, _, port_text = str(job["target"]).rpartition(":")
    port = int(port_text)
    prefix = str(job.get("id_prefix", "m"))
    requests = [
        binary_event(f"{prefix}-{i}", message_data(url, i), job["target"])
        for i, url in enumerate(job["callback_urls"])
    ]
    warmup = int(job.get("warmup", 0))
    concurrency = int(job["concurrency"])
    warm = await _phase(host, port, requests[:warmup], concurrency, 60.0)
    # CPU of the server processes during the measured phase only.
    groups: dict[str, list[int]] = job.get("cpu_pids", {})
    cpu_before = {name: sum(cpu_seconds(p) for p in pids) for name, pids in groups.items()}
    measured = await _phase(
        host, port, requests[warmup:], concurrency, float(job["time_limit_seconds"])
    )
    measured["cpu_seconds"] = {
        name: sum(cpu_seconds(p) for p in pids) - cpu_before[name] for name, pids in groups.items()
    }
    measured["warmup"] = {k: warm[k] for k in ("sent", "statuses")}
    return measured


def main(argv: list[str]) -> int:
    job_path, out_path = argv
    with open(job_path, encoding="utf-8") as handle:
        job = json.load(handle)
    result = asyncio.run(run_job(job))
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
