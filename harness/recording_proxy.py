"""A loopback reverse proxy that records each request's answer: where a push is acked.

Pub/Sub push acknowledges a message when the endpoint answers 2xx and redelivers
it otherwise (https://cloud.google.com/pubsub/docs/push#receive_push). Put this
proxy between a push subscription and the function, and a test sees every
delivery and the function's answer to it: it can prove "acknowledged once"
from the record, instead of sleeping to see that nothing more arrives.
"""

from __future__ import annotations

import dataclasses
import http.server
import threading
import time

import requests

from harness.loopback_server import LoopbackServer, QuietHandler
from harness.thread_sessions import ThreadSessions

# Hop-by-hop and framing headers: the proxy's own HTTP stack sets these.
_SKIPPED = frozenset({"connection", "content-length", "host", "transfer-encoding", "keep-alive"})


@dataclasses.dataclass(frozen=True)
class ProxiedRequest:
    path: str
    status: int  # the function's answer, or 502 when it could not be reached
    received_at: float
    seconds: float

    @property
    def acked(self) -> bool:
        return 200 <= self.status < 300


class RecordingProxy(LoopbackServer):
    def __init__(self, target_origin: str, timeout: float = 60.0) -> None:
        self.target_origin = target_origin.rstrip("/")
        self.timeout = timeout
        self.requests: list[ProxiedRequest] = []
        self._lock = threading.Condition()
        self._in_flight = 0
        self._sessions = ThreadSessions()
        super().__init__(self._handler())

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, then wait for requests still being forwarded: once this
        returns, nothing that came through the proxy can still reach the target."""
        super().stop()
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout)
        self._sessions.close()

    def snapshot(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self.requests)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                with proxy._lock:
                    proxy._in_flight += 1
                try:
                    self._forward()
                finally:
                    with proxy._lock:
                        proxy._in_flight -= 1
                        proxy._lock.notify_all()

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIPPED}
                received_at = time.time()
                started = time.monotonic()
                try:
                    reply = proxy._sessions.get().post(
                        proxy.target_origin + self.path,
                        data=body,
                        headers=headers,
                        timeout=proxy.timeout,
                    )
                    status, content = reply.status_code, reply.content
                except requests.RequestException:
                    status, content = 502, b""
                record = ProxiedRequest(self.path, status, received_at, time.monotonic() - started)
                with proxy._lock:
                    proxy.requests.append(record)
                self.send_response(status)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        return Handler
