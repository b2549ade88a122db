"""A loopback GCE metadata server, enough for google-auth's compute-engine path.

google-auth reads ``GCE_METADATA_HOST`` / ``GCE_METADATA_IP`` when it is
imported; point both at ``server.host``. It asks for:
- ``/`` (the ping): any reply with ``Metadata-Flavor: Google``;
- ``/computeMetadata/v1/project/project-id``;
- ``/computeMetadata/v1/instance/service-accounts/default/?recursive=true``;
- ``/computeMetadata/v1/instance/service-accounts/default/token``.
Requests without ``Metadata-Flavor: Google`` get 403, as on GCE.
https://cloud.google.com/compute/docs/metadata/querying-metadata

Run as a CLI for other processes: ``python -m harness.fake_metadata_server --port 0``
prints ``READY host:port``. ``GET /_fake/stats`` counts token requests,
``GET /_fake/fail?count=N&status=500`` fails the next N of them and
``GET /_fake/shape?name=NAME`` answers token requests in one of the
``WRONG_SHAPES`` (``name=`` for the right one again).
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.loopback_server import LoopbackServer, QuietHandler

SERVICE_ACCOUNT = "callback-relay-fn@test-project.iam.gserviceaccount.com"
JSON = "application/json"


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


# Token answers of the wrong shape: name -> (content type, body from the token).
# Every token in them is a fresh secret, so a test can look for it in the logs.
WRONG_SHAPES: dict[str, tuple[str, Callable[[str], str]]] = {
    "no_expires_in": (JSON, lambda t: json.dumps({"access_token": t, "token_type": "Bearer"})),
    "string_expires_in": (JSON, lambda t: json.dumps({"access_token": t, "expires_in": "3599"})),
    "huge_expires_in": (JSON, lambda t: json.dumps({"access_token": t, "expires_in": 10**30})),
    "long_expires_in": (JSON, lambda t: json.dumps({"access_token": t, "expires_in": 10**8})),
    "negative_expires_in": (JSON, lambda t: json.dumps({"access_token": t, "expires_in": -5})),
    "float_nan_expires_in": (JSON, lambda t: f'{{"access_token": "{t}", "expires_in": NaN}}'),
    "list": (JSON, lambda t: json.dumps([t, 3599])),
    "null_token": (JSON, lambda t: json.dumps({"access_token": None, "expires_in": 3599})),
    "number_token": (JSON, lambda t: json.dumps({"access_token": 12345, "expires_in": 3599})),
    "text_plain": ("text/plain", lambda t: t),
    "crlf_token": (
        JSON,
        lambda t: json.dumps({"access_token": t + "\r\nX-Injected: 1", "expires_in": 3599}),
    ),
    "space_token": (JSON, lambda t: json.dumps({"access_token": t + " extra", "expires_in": 3599})),
    "broken_json": (JSON, lambda t: '{"access_token": "' + t + '", "expires_in": 35'),
    "deep_json": (JSON, lambda t: _deep(100_000)),
    "not_utf8": (JSON, lambda t: "\udcff"),
}


class FakeMetadataServer(LoopbackServer):
    def __init__(
        self,
        project_id: str = "test-project",
        token_delay_seconds: float = 0.0,
        token_lifetime_seconds: int = 3599,
        port: int = 0,
    ) -> None:
        self.project_id = project_id
        self.token_delay_seconds = token_delay_seconds
        self.token_lifetime_seconds = token_lifetime_seconds
        self.issued_tokens: list[str] = []
        self.token_requests = 0
        self._fail_next = 0
        self._fail_status = 500
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        # Cleared to hold token requests until it is set again (tests of slow refreshes).
        self.token_gate = threading.Event()
        self.token_gate.set()
        self.token_requests_waiting = 0
        # One of WRONG_SHAPES, or None for a well-formed answer.
        self.token_shape: str | None = None
        # Authorization headers seen on any request (from .netrc, for example).
        self.authorization_headers: list[str] = []
        super().__init__(self._handler(), port)

    def fail_token_requests(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` token requests with ``status``."""
        with self._lock:
            self._fail_next = count
            self._fail_status = status

    def is_valid(self, token: str) -> bool:
        with self._lock:
            return token in self.issued_tokens

    def _token_reply(self) -> tuple[int, Any] | tuple[int, bytes, str]:
        if not self.token_gate.is_set():
            with self._lock:
                self.token_requests_waiting += 1
            self.token_gate.wait(30)
            with self._lock:
                self.token_requests_waiting -= 1
        if self.token_delay_seconds:
            time.sleep(self.token_delay_seconds)
        with self._lock:
            self.token_requests += 1
            if self._fail_next > 0:
                self._fail_next -= 1
                return self._fail_status, "metadata server unavailable"
            token = f"ya29.fake-{next(self._counter)}-{secrets.token_urlsafe(16)}"
            self.issued_tokens.append(token)
            shape = self.token_shape
        if shape is not None:
            content_type, build = WRONG_SHAPES[shape]
            return 200, build(token).encode("utf-8", "surrogateescape"), content_type
        return 200, {
            "access_token": token,
            "expires_in": self.token_lifetime_seconds,
            "token_type": "Bearer",
        }

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if "Authorization" in self.headers:
                    fake.authorization_headers.append(self.headers["Authorization"])
                if path == "/_fake/stats":
                    self._reply(200, {"token_requests": fake.token_requests})
                    return
                if path == "/_fake/fail":
                    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                    fake.fail_token_requests(
                        int(params.get("count", "1")), int(params.get("status", "500"))
                    )
                    self._reply(200, {})
                    return
                if path == "/_fake/shape":
                    name = query.partition("name=")[2] or None
                    if name is not None and name not in WRONG_SHAPES:
                        self._reply(400, f"unknown shape {name}")
                        return
                    fake.token_shape = name
                    self._reply(200, {})
                    return
                if path == "/":
                    self._reply(200, "computeMetadata/\n")
                    return
                if self.headers.get("Metadata-Flavor") != "Google":
                    self._reply(403, "Missing Metadata-Flavor:Google header.")
                    return
                base = "/computeMetadata/v1/"
                accounts = base + "instance/service-accounts/"
                # google-auth asks by "default" first, then by the account's email.
                for alias in ("default", SERVICE_ACCOUNT):
                    if path.startswith(accounts + alias):
                        path = path.replace(accounts + alias, accounts + "default", 1)
                account = accounts + "default"
                if path == base + "project/project-id":
                    self._reply(200, fake.project_id)
                elif path in (account, account + "/"):
                    self._reply(
                        200,
                        {
                            "aliases": ["default"],
                            "email": SERVICE_ACCOUNT,
                            "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                        },
                    )
                elif path == account + "/email":
                    self._reply(200, SERVICE_ACCOUNT)
                elif path == account + "/token":
                    self._reply(*fake._token_reply())
                else:
                    self._reply(404, "not found")

            def _reply(self, status: int, body: Any, content_type: str | None = None) -> None:
                is_json = not isinstance(body, str | bytes)
                if isinstance(body, bytes):
                    data = body
                else:
                    data = (json.dumps(body) if is_json else body).encode()
                self.send_response(status)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header(
                    "Content-Type",
                    content_type or ("application/json" if is_json else "application/text"),
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--project", default="test-project")
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--token-lifetime", type=int, default=3599)
    args = parser.parse_args()
    server = FakeMetadataServer(
        args.project, args.token_delay_ms / 1000, args.token_lifetime, args.port
    )
    server.serve_cli()


if __name__ == "__main__":
    main()
