"""A loopback fake of the Workflows callback API (sendHttpCallback).

It follows the documented behaviour, and nothing more:
- a callback URL is
  ``/v1/projects/P/locations/L/workflows/W/executions/E/callbacks/C``;
- a request without ``Authorization: Bearer`` gets 401 UNAUTHENTICATED;
- only the method the callback was created with is accepted;
- a request that arrives before ``await_callback`` is held in a one-slot buffer;
  while that slot is full a further request gets 429;
- once the execution has ended (succeeded, failed, cancelled or timed out)
  every callback of it answers 404;
- every call is recorded.
Sources: https://cloud.google.com/workflows/docs/creating-callback-endpoints and
https://cloud.google.com/blog/products/application-development/using-single-execution-calls-with-workflows
Error bodies follow https://cloud.google.com/apis/design/errors.

Faults can be injected, for tests of the relay's retries: a queue of canned
answers (status, body, headers, delay, connection reset), a callable that
picks one per request, or random faults at given rates (``FaultRates``, decided
per request with a seeded generator, for the benchmark and the soak). A "slow"
fault is processed for real but answered after ``slow_seconds``, past the
relay's read timeout: the relay's retry then meets the callback's own
"already pending" 429, as it would in Workflows.

Run as a CLI for other processes: ``python -m harness.fake_workflows_api --port 0``
prints ``READY host:port``. A small JSON control API under ``/_fake/`` drives it:
POST /_fake/executions {"workflow"} -> {"execution", "callback_url"}
POST /_fake/callbacks {"execution", "method"} -> {"callback_url"} (another callback)
POST /_fake/await {"callback_url", "timeout"} -> the callback request, or 408
POST /_fake/end {"execution"}; POST /_fake/faults [fault, ...]; GET /_fake/calls.
For load: POST /_fake/bulk {"count", "workflow"} -> {"callback_urls"} (one fresh
execution per callback); POST /_fake/reset; GET /_fake/stats (calls by status,
faults by kind); GET /_fake/ledger ([path, Idempotency-Key, status, received_at]).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import http.server
import json
import random
import re
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from harness.loopback_server import LoopbackServer, QuietHandler

# The same rule the relay enforces: an execution's callback URL and nothing else.
CALLBACK_PATH_RE = re.compile(
    r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/workflows/(?P<workflow>[^/]+)"
    r"/executions/(?P<execution>[^/]+)/callbacks/(?P<callback>[^/?]+)"
)
PENDING_MESSAGE = "Callback already has a pending request that has not been consumed yet."


def google_error(code: int, status: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()


@dataclasses.dataclass
class Fault:
    """One canned answer. ``reset`` closes the connection without a reply."""

    status: int = 503
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_seconds: float = 0.0
    reset: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        return cls(
            status=int(data.get("status", 503)),
            body=str(data.get("body", "")).encode(),
            headers=dict(data.get("headers", {})),
            delay_seconds=float(data.get("delay_seconds", 0.0)),
            reset=bool(data.get("reset", False)),
        )


def quota_fault(retry_after: int = 1) -> Fault:
    return Fault(
        429,
        google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Requests'."),
        {"Retry-After": str(retry_after)},
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


@dataclasses.dataclass
class RecordedCall:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    received_at: float
    client_port: int = 0

    @property
    def bearer_token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[7:] if value.startswith("Bearer ") else None

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": {k: v for k, v in self.headers.items() if k != "Authorization"},
            "has_bearer": self.bearer_token is not None,
            "body": self.body.decode("utf-8", "replace"),
            "status": self.status,
            "received_at": self.received_at,
        }


@dataclasses.dataclass
class _Callback:
    url: str
    method: str
    buffered: dict[str, Any] | None = None
    received_at: float | None = None


@dataclasses.dataclass
class _Execution:
    name: str
    running: bool = True
    callbacks: dict[str, _Callback] = dataclasses.field(default_factory=dict)


class FakeWorkflowsApi(LoopbackServer):
    def __init__(
        self,
        project: str = "test-project",
        location: str = "us-central1",
        ssl_context: ssl.SSLContext | None = None,
        token_validator: Callable[[str], bool] | None = None,
        port: int = 0,
        rates: FaultRates | None = None,
        seed: int = 1,
    ) -> None:
        self.rates = rates or FaultRates()
        self.fault_counts: collections.Counter[str] = collections.Counter()
        self._random = random.Random(seed)  # noqa: S311 - fault injection, not security
        self.project = project
        self.location = location
        self.token_validator = token_validator
        self.calls: list[RecordedCall] = []
        self.faults: collections.deque[Fault] = collections.deque()
        self.fault_picker: Callable[[RecordedCall], Fault | None] | None = None
        self._executions: dict[str, _Execution] = {}
        self._cond = threading.Condition()
        super().__init__(self._handler(), port, ssl_context)

    # -- lifecycle ----------------------------------------------------------

    @property
    def emulator_host(self) -> str:
        """The relay's WORKFLOWS_EMULATOR_HOST value for this fake."""
        return self.host if self.scheme == "http" else self.origin

    def reset(self) -> None:
        """Forget every execution, call and fault, as a fresh fake would."""
        with self._cond:
            self.calls.clear()
            self._executions.clear()
            self.fault_counts.clear()
            self.faults.clear()
            self.fault_picker = None

    # -- what a workflow does ----------------------------------------------

    def create_execution(self, workflow: str = "callback-relay-demo") -> str:
        name = (
            f"projects/{self.project}/locations/{self.location}/workflows/{workflow}"
            f"/executions/{uuid.uuid4()}"
        )
        with self._cond:
            self._executions[name] = _Execution(name)
        return name

    def create_callback(self, execution: str, method: str = "POST") -> str:
        """events.create_callback_endpoint: returns the callback URL."""
        url = f"{self.origin}/v1/{execution}/callbacks/{uuid.uuid4()}"
        with self._cond:
            self._executions[execution].callbacks[url] = _Callback(url, method)
        return url

    def await_callback(self, url: str, timeout: float) -> dict[str, Any]:
        """events.await_callback: the request, or TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            callback = self._find(url)
            while callback.buffered is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no callback request within {timeout} s")
                self._cond.wait(remaining)
            request, callback.buffered = callback.buffered, None
            self._cond.notify_all()
            return request

    def end_execution(self, execution: str) -> None:
        with self._cond:
            self._executions[execution].running = False

    def calls_to(self, url: str) -> list[RecordedCall]:
        path = url.split("://", 1)[-1].split("/", 1)[-1]
        with self._cond:
            return [c for c in self.calls if c.path == "/" + path]

    def _find(self, url: str) -> _Callback:
        for execution in self._executions.values():
            if url in execution.callbacks:
                return execution.callbacks[url]
        raise KeyError(url)

    # -- what the API answers ----------------------------------------------

    def _answer(self, call: RecordedCall) -> tuple[int, bytes]:
        match = CALLBACK_PATH_RE.fullmatch(call.path)
        if match is None:
            return 404, google_error(404, "NOT_FOUND", "Requested entity was not found.")
        token = call.bearer_token
        if not token or (self.token_validator is not None and not self.token_validator(token)):
            return 401, google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        execution_name = call.path.split("/callbacks/")[0][len("/v1/") :]
        url = f"{self.origin}{call.path}"
        with self._cond:
            execution = self._executions.get(execution_name)
            callback = execution.callbacks.get(url) if execution else None
            if execution is None or callback is None or not execution.running:
                return 404, google_error(404, "NOT_FOUND", "Requested entity was not found.")
            if call.method != callback.method:
                return 400, google_error(
                    400,
                    "INVALID_ARGUMENT",
                    f"callback expects {callback.method}, got {call.method}",
                )
            if callback.buffered is not None:
                return 429, google_error(429, "RESOURCE_EXHAUSTED", PENDING_MESSAGE)
            body: Any = call.body.decode("utf-8", "replace")
            if call.headers.get("Content-Type", "").startswith("application/json"):
                with contextlib.suppress(ValueError):
                    body = json.loads(call.body)
            callback.buffered = {
                "http_request": {
                    "body": body,
                    "headers": {k: v for k, v in call.headers.items() if k != "Authorization"},
                    "method": call.method,
                    "query": {},
                    "url": call.path,
                },
                "type": "HTTP",
                "received_at": call.received_at,
            }
            self._cond.notify_all()
        return 200, b""

    def _next_fault(self, call: RecordedCall) -> Fault | None:
        with self._cond:
            if self.faults:
                return self.faults.popleft()
        if self.fault_picker is not None:
            return self.fault_picker(call)
        return self._random_fault(call)

    def _random_fault(self, call: RecordedCall) -> Fault | None:
        r = self.rates
        if r.total <= 0 or CALLBACK_PATH_RE.fullmatch(call.path) is None:
            return None
        with self._cond:
            draw = self._random.random()
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
        data = json.loads(body or b"null")
        if method == "POST" and path == "/_fake/executions":
            execution = self.create_execution(data.get("workflow", "callback-relay-demo"))
            url = self.create_callback(execution, data.get("method", "POST"))
            return 200, {"execution": execution, "callback_url": url}
        if method == "POST" and path == "/_fake/callbacks":
            url = self.create_callback(data["execution"], data.get("method", "POST"))
            return 200, {"callback_url": url}
        if method == "POST" and path == "/_fake/await":
            try:
                return 200, self.await_callback(data["callback_url"], float(data["timeout"]))
            except TimeoutError as exc:
                return 408, {"error": str(exc)}
        if method == "POST" and path == "/_fake/end":
            self.end_execution(data["execution"])
            return 200, {}
        if method == "POST" and path == "/_fake/faults":
            with self._cond:
                self.faults.extend(Fault.from_json(f) for f in data)
            return 200, {"queued": len(self.faults)}
        if method == "GET" and path == "/_fake/calls":
            with self._cond:
                return 200, [c.to_json() for c in self.calls]
        if method == "POST" and path == "/_fake/bulk":
            workflow = str(data.get("workflow", "callback-relay-demo"))
            urls = [
                self.create_callback(self.create_execution(workflow))
                for _ in range(int(data["count"]))
            ]
            return 200, {"callback_urls": urls}
        if method == "POST" and path == "/_fake/reset":
            self.reset()
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
        return 404, {"error": "unknown control path"}

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path
                if path.startswith("/_fake/"):
                    status, reply = fake._control(self.command, path, body)
                    self._send(status, json.dumps(reply).encode(), {})
                    return
                call = RecordedCall(
                    self.command,
                    path,
                    dict(self.headers.items()),
                    body,
                    None,
                    time.time(),
                    int(self.client_address[1]),
                )
                with fake._cond:
                    fake.calls.append(call)
                fault = fake._next_fault(call)
                if fault is not None:
                    if fault.delay_seconds:
                        time.sleep(fault.delay_seconds)
                    if fault.reset:
                        call.status = -1
                        # SO_LINGER 0: the client sees a connection reset, not a clean close.
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        self.close_connection = True
                        return
                    call.status = fault.status
                    self._send(fault.status, fault.body, fault.headers)
                    return
                status, reply_body = fake._answer(call)
                call.status = status
                self._send(status, reply_body, {})

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_one

            def do_HEAD(self) -> None:
                self.handle_one()

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--project", default="test-project")
    parser.add_argument("--location", default="us-central1")
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
    fake = FakeWorkflowsApi(
        args.project, args.location, context, port=args.port, rates=rates, seed=args.seed
    )
    fake.serve_cli()


if __name__ == "__main__":
    main()
