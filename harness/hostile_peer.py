"""A loopback HTTP peer that is valid enough to be talked to, and hostile in the answer.

The last path segment picks the mode, so one server serves every mode at once
and a callback URL such as
``http://HOST/v1/projects/p/locations/l/workflows/w/executions/e/callbacks/drip-body``
passes the relay's URL policy (``WORKFLOWS_EMULATOR_HOST=HOST``).

Modes (``MODES``): ``ok``; ``drip-body`` and ``drip-headers`` (one byte every
``drip_interval`` s); ``drip-ok`` (a valid 200 with ``Content-Length: 24`` whose
body comes one byte every ``drip_interval`` s); ``no-answer``; ``huge-body``
(300 MB streamed from one 64 KiB block, never held); ``huge-chunked`` (an endless chunked body);
``gzip-bomb`` and ``gzip-bomb-ok`` (32 MiB of zeros in about 32 KB of
gzip); ``retry-after-N`` (a 503 with ``RETRY_AFTER_GARBAGE[N]``);
``deep-json`` and ``deep-json-429``; ``long-pending-quota`` (a 429 whose
message says "pending" first and "quota" 20 KB later); ``pending-reason`` (a
429 with an ErrorInfo reason only); ``too-long-body-pending`` (a pending 429
message longer than the read cap); ``reset`` and ``reset-mid-body``;
``many-headers``; ``long-header``; ``bad-status``.

``SlowConnectListener`` is a port whose accept queue is full: a connect to it
never completes, as with an overloaded peer.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from harness.loopback_server import LoopbackServer, QuietHandler

CALLBACK_PATH = "/v1/projects/p/locations/l/workflows/w/executions/e/callbacks/"
HUGE_BODY_BYTES = 300 * 1000 * 1000
_BLOCK = b"x" * 65536
# Retry-After values that are neither delay-seconds nor an HTTP-date, and a few
# that are but are absurd. Bytes: http.client decodes header values as Latin-1.
RETRY_AFTER_GARBAGE: tuple[bytes, ...] = (
    "²".encode("latin-1"),  # isdigit() is true, float() raises
    "٣".encode(),  # Arabic-Indic three, sent as UTF-8
    b"-5",
    b"1e309",
    b"9" * 5000,  # int() refuses more than 4300 digits
    b"inf",
    b"NaN",
    b"Sat, 28 Nov 99999 12:00:00 GMT",
    b"Sat, 28 Nov 0000 12:00:00 GMT",
    b"Sat, 28 Nov 2026 99:99:99 GMT",
    b"Sat, 28 Nov 2026 12:00:00 +9999",
    b"Mon, 01 Jan 1 00:00:00 GMT",
    b"Fri, 31 Dec 9999 23:59:59 GMT",
    b"\x00\x01\x02",
    b"",
)
PENDING_MESSAGE = "Callback already has a pending request that has not been consumed yet."


def error_json(code: int, status: str, message: str, details: list[Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "status": status, "message": message}
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error}).encode()


@functools.cache
def gzip_bomb(megabytes: int = 32) -> bytes:
    """``megabytes`` MiB of zeros, gzip-compressed to about 1/1000 of that.

    32 MiB compress to about 32 KB: the whole bomb fits under the relay's 64 KiB
    read cap, so only the decompression limit stands between it and memory.
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(megabytes)]
    parts.append(compressor.flush())
    return b"".join(parts)


def _response_head(status: int, headers: list[tuple[str, bytes]]) -> bytes:
    lines = [f"HTTP/1.1 {status} Hostile".encode()]
    lines += [name.encode() + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class HostilePeer(LoopbackServer):
    def __init__(
        self, drip_interval: float = 0.05, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.drip_interval = drip_interval
        self.requests: list[tuple[str, int]] = []  # (mode, client port)
        self.bytes_sent: dict[str, int] = {}
        self._lock = threading.Lock()
        gzip_bomb()  # built now, so that serving it takes no time
        super().__init__(self._handler(), ssl_context=ssl_context)

    def callback_url(self, mode: str) -> str:
        return f"{self.origin}{CALLBACK_PATH}{mode}"

    def _count(self, mode: str, sent: int) -> None:
        with self._lock:
            self.bytes_sent[mode] = self.bytes_sent.get(mode, 0) + sent

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        peer = self

        class Handler(QuietHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError):  # a reset client is expected here
                    super().handle()

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                mode = self.path.rsplit("/", 1)[-1]
                with peer._lock:
                    peer.requests.append((mode, self.client_address[1]))
                action = _MODES.get(mode)
                if action is None and mode.startswith("retry-after-"):
                    action = _retry_after
                if action is None:
                    self.send_error(404)
                    return
                try:
                    action(self, peer, mode)
                except OSError:
                    self.close_connection = True  # the client went away: that is the point

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any

            def raw(self, data: bytes, mode: str) -> None:
                self.wfile.write(data)
                peer._count(mode, len(data))

            def reset(self) -> None:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True

        return Handler


_Peer = Any  # the handler class above: raw(), reset(), connection, close_connection


def _ok(h: _Peer, peer: HostilePeer, mode: str) -> None:
    h.raw(_response_head(200, [("Content-Length", b"2")]) + b"{}", mode)


def _drip_body(h: _Peer, peer: HostilePeer, mode: str) -> None:
    h.raw(_response_head(503, [("Content-Length", b"1000000")]), mode)
    for _ in range(1000000):
        h.raw(b"x", mode)
        time.sleep(peer.drip_interval)


def _drip_ok(h: _Peer, peer: HostilePeer, mode: str) -> None:
    # A complete, valid 200 whose 24-byte body arrives one byte per interval.
    h.raw(_response_head(200, [("Content-Length", b"24")]), mode)
    for byte in b'{"drip": "fed, slowly."}':
        time.sleep(peer.drip_interval)
        h.raw(bytes([byte]), mode)


def _drip_headers(h: _Peer, peer: HostilePeer, mode: str) -> None:
    h.raw(b"HTTP/1.1 200 OK\r\n", mode)
    while True:
        h.raw(b"X", mode)
        time.sleep(peer.drip_interval)


def _no_answer(h: _Peer, peer: HostilePeer, mode: str) -> None:
    while h.connection.recv(1):  # until the client gives up and closes
        pass
    h.close_connection = True


def _huge_body(h: _Peer, peer: HostilePeer, mode: str) -> None:
    h.raw(_response_head(500, [("Content-Length", str(HUGE_BODY_BYTES).encode())]), mode)
    for _ in range(HUGE_BODY_BYTES // len(_BLOCK)):
        h.raw(_BLOCK, mode)
    h.raw(_BLOCK[: HUGE_BODY_BYTES % len(_BLOCK)], mode)


def _huge_chunked(h: _Peer, peer: HostilePeer, mode: str) -> None:
    h.raw(_response_head(500, [("Transfer-Encoding", b"chunked")]), mode)
    chunk = b"%x\r\n" % len(_BLOCK) + _BLOCK + b"\r\n"
    while True:
        h.raw(chunk, mode)


def _gzip(status: int) -> Callable[[_Peer, HostilePeer, str], None]:
    def send(h: _Peer, peer: HostilePeer, mode: str) -> None:
        bomb = gzip_bomb()
        headers = [("Content-Encoding", b"gzip"), ("Content-Length", str(len(bomb)).encode())]
        h.raw(_response_head(status, headers) + bomb, mode)

    return send


def _body(status: int, body: bytes, *extra: tuple[str, bytes]) -> Callable[..., None]:
    def send(h: _Peer, peer: HostilePeer, mode: str) -> None:
        headers = [*extra, ("Content-Length", str(len(body)).encode())]
        h.raw(_response_head(status, headers) + body, mode)

    return send


def _retry_after(h: _Peer, peer: HostilePeer, mode: str) -> None:
    value = RETRY_AFTER_GARBAGE[int(mode.rsplit("-", 1)[1])]
    _body(503, b"", ("Retry-After", value))(h, peer, mode)


def _reset(h: _Peer, peer: HostilePeer, mode: str) -> None:
    h.reset()


def _reset_mid_body(h: _Peer, peer: HostilePeer, mode: str) -> None:
    h.raw(_response_head(200, [("Content-Length", b"100000")]) + b"x" * 1000, mode)
    h.reset()


_DEEP = 50_000
_MODES: dict[str, Callable[[_Peer, HostilePeer, str], None]] = {
    "ok": _ok,
    "drip-body": _drip_body,
    "drip-headers": _drip_headers,
    "drip-ok": _drip_ok,
    "no-answer": _no_answer,
    "huge-body": _huge_body,
    "huge-chunked": _huge_chunked,
    "gzip-bomb": _gzip(500),
    "gzip-bomb-ok": _gzip(200),
    "deep-json": _body(400, b'{"error": ' + b"[" * _DEEP + b"]" * _DEEP + b"}"),
    "deep-json-429": _body(
        429,
        b'{"error": {"status": "RESOURCE_EXHAUSTED", "message": "pending", "details": '
        + b"[" * _DEEP
        + b"]" * _DEEP
        + b"}}",
    ),
    "long-pending-quota": _body(
        429,
        error_json(429, "RESOURCE_EXHAUSTED", PENDING_MESSAGE + " " * 20_000 + "Quota exceeded."),
    ),
    "pending-reason": _body(
        429,
        error_json(
            429,
            "RESOURCE_EXHAUSTED",
            "Resource exhausted.",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CALLBACK_PENDING"}],
        ),
    ),
    "too-long-body-pending": _body(
        429, error_json(429, "RESOURCE_EXHAUSTED", PENDING_MESSAGE + "y" * 100_000)
    ),
    "reset": _reset,
    "reset-mid-body": _reset_mid_body,
    "many-headers": _body(200, b"{}", *[(f"X-H{i}", b"v") for i in range(150)]),
    "long-header": _body(503, b"", ("X-Long", b"v" * 100_000)),
    "bad-status": lambda h, peer, mode: h.raw(b"HTTP/1.1 99x Nope\r\n\r\n", mode),
}
MODES = tuple(sorted(_MODES))


class SlowConnectListener:
    """A listening port that never completes another connection: its accept queue is full."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self._fillers: list[socket.socket] = []
        # Linux queues backlog + 1 connections; then it drops further SYNs.
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(self.address)
            self._fillers.append(filler)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.address[1]}"

    def callback_url(self, mode: str = "ok") -> str:
        return f"http://{self.host}{CALLBACK_PATH}{mode}"

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._listener.close()

    def __enter__(self) -> SlowConnectListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
