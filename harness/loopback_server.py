"""What both fakes share: a threaded HTTP/1.1 server on 127.0.0.1, optionally TLS."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import sys
import threading
from typing import Any, Self

POLL_SECONDS = 0.02


class QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY,
    # Nagle and delayed ACKs add 40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[http.server.BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(address, handler)
        self.ssl_context = ssl_context

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up on a keep-alive connection is normal, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the connection's own thread, not in the accept loop.
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


class LoopbackServer:
    """Owns the server; subclasses give ``handler_class``."""

    def __init__(
        self,
        handler_class: type[http.server.BaseHTTPRequestHandler],
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._server = _ThreadingServer(("127.0.0.1", port), handler_class, ssl_context)
        self.scheme = "https" if ssl_context is not None else "http"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}"

    def start(self) -> Self:
        # shutdown() waits for the serve loop's next poll: 0.5 s by default, paid
        # by every test that stops a server. 20 ms costs nothing measurable.
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_cli(self) -> None:
        """Serve in the foreground after printing the READY line other processes wait for."""
        print(f"READY {self.host}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            self._server.serve_forever(poll_interval=POLL_SECONDS)
