"""The fake Workflows API (tests.fakes.workflows_api) with what the bench and soak add.

- ``POST /_fake/bulk {"count", "workflow"}`` creates ``count`` executions with one
  POST callback each and returns their URLs: one fresh callback per message, so
  every relayed message gets a real 200 from the fake's own logic.
- ``POST /_fake/reset`` forgets executions and recorded calls between runs.
- ``GET /_fake/stats`` counts recorded calls by answered status.
- ``GET /_fake/ledger`` returns, per recorded callback call, only what the soak
  counts (path, Idempotency-Key, status, received_at): smaller than /_fake/calls.
- Random faults at configurable rates (``--p-5xx`` ...), decided per request
  with a seeded generator. A "slow" fault is processed for real (the callback
  receives the request) but answered after ``--slow-seconds``, past the relay's
  read timeout: the relay's retry then meets the callback's own "already
  pending" 429, as it would in Workflows.

    python -m bench.workflows_server --port 0 --tls-cert C --tls-key K [--p-5xx 0.05 ...]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import random
import ssl
import threading
from typing import Any

from tests.fakes.workflows_api import (
    CALLBACK_PATH_RE,
    FakeWorkflowsApi,
    Fault,
    RecordedCall,
    google_error,
    quota_fault,
)


@dataclasses.dataclass(frozen=True)
class FaultRates:
    """Probability of each fault per callback request (they are exclusive)."""

    server_error: float = 0.0
    quota: float = 0.0
    slow: float = 0.0
    reset: float = 0.0
    slow_seconds: float = 2.0
    quota_retry_after: int = 1

    @property
    def total(self) -> float:
        return self.server_error + self.quota + self.slow + self.reset


class BenchWorkflowsApi(FakeWorkflowsApi):
    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        port: int = 0,
        rates: FaultRates | None = None,
        seed: int = 1,
    ) -> None:
        self.rates = rates or FaultRates()
        self.fault_counts: collections.Counter[str] = collections.Counter()
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        super().__init__(ssl_context=ssl_context, port=port)

    def _next_fault(self, call: RecordedCall) -> Fault | None:
        queued = super()._next_fault(call)
        if queued is not None or self.rates.total <= 0:
            return queued
        if CALLBACK_PATH_RE.fullmatch(call.path) is None:
            return None
        with self._random_lock:
            draw = self._random.random()
        r = self.rates
        kind = None
        fault: Fault | None = None
        if draw < r.server_error:
            kind = "5xx"
            fault = Fault(503, google_error(503, "UNAVAILABLE", "The service is unavailable."))
        elif draw < r.server_error + r.quota:
            kind = "quota_429"
            fault = quota_fault(r.quota_retry_after)
        elif draw < r.server_error + r.quota + r.slow:
            kind = "slow"
            # Processed now, answered late: the client has given up by then.
            status, body = self._answer(call)
            fault = Fault(status, body, delay_seconds=r.slow_seconds)
        elif draw < r.total:
            kind = "reset"
            fault = Fault(reset=True)
        if kind is not None:
            with self._cond:
                self.fault_counts[kind] += 1
        return fault

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "POST" and path == "/_fake/bulk":
            data = json.loads(body or b"{}")
            workflow = str(data.get("workflow", "callback-relay-demo"))
            urls = [
                self.create_callback(self.create_execution(workflow))
                for _ in range(int(data["count"]))
            ]
            return 200, {"callback_urls": urls}
        if method == "POST" and path == "/_fake/reset":
            with self._cond:
                self.calls.clear()
                self._executions.clear()
                self.fault_counts.clear()
            return 200, {}
        if method == "GET" and path == "/_fake/stats":
            with self._cond:
                statuses = collections.Counter(str(c.status) for c in self.calls)
                return 200, {
                    "calls": len(self.calls),
                    "by_status": dict(statuses),
                    "faults": dict(self.fault_counts),
                }
        if method == "GET" and path == "/_fake/ledger":
            with self._cond:
                return 200, [
                    [c.path, c.idempotency_key, c.status, c.received_at] for c in self.calls
                ]
        return super()._control(method, path, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert", help="PEM certificate chain; serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--p-5xx", type=float, default=0.0, help="503 UNAVAILABLE")
    parser.add_argument("--p-quota", type=float, default=0.0, help="429 RESOURCE_EXHAUSTED quota")
    parser.add_argument("--p-slow", type=float, default=0.0, help="processed, answered late")
    parser.add_argument("--p-reset", type=float, default=0.0, help="connection reset, unprocessed")
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After of quota 429s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    rates = FaultRates(
        server_error=args.p_5xx,
        quota=args.p_quota,
        slow=args.p_slow,
        reset=args.p_reset,
        slow_seconds=args.slow_seconds,
        quota_retry_after=args.retry_after,
    )
    if rates.total > 1:
        parser.error("fault probabilities add up to more than 1")
    BenchWorkflowsApi(context, args.port, rates, args.seed).serve_cli()


if __name__ == "__main__":
    main()
