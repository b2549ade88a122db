"""A loopback server that must never receive anything from the relay."""

from __future__ import annotations

import http.server

from harness.loopback_server import LoopbackServer, QuietHandler


class AttackerServer(LoopbackServer):
    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, str]]] = []
        super().__init__(self._handler())

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        attacker = self

        class Handler(QuietHandler):
            def _record(self) -> None:
                attacker.received.append((self.command, self.path, dict(self.headers.items())))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _record

        return Handler
