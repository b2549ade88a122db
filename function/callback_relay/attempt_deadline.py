"""Ends an HTTP attempt at its deadline, however slowly the peer sends its bytes.

requests' read timeout bounds each socket read, not the attempt: a peer that
drip-feeds headers or a body one byte per second keeps a read timeout of 15 s
from ever firing. So every attempt runs under a deadline, and one watchdog
thread shuts the attempt's socket down when the deadline passes; the blocked
read then returns and the attempt fails like any broken connection.

The socket is found without touching requests' internals: the session's
connection classes report themselves to the attempt of the calling thread
when they connect or send a request on a kept-alive connection, and the pool
takes a connection back from its attempt when it returns to the pool. So an
attempt only ever holds the connection it is using now: its deadline can never
shut a connection that went back to the pool and was taken by another thread.
Expiry and the return to the pool exclude each other (one lock per attempt),
and the attempt records whether its deadline shut a connection it held
(``cut``): only then can what it read have ended at that shutdown rather than
at the peer's end of message, since http.client reads headers or a body cut
short by an end of file as complete. An answer whose connection went back to
the pool before the deadline is whole, and is kept.

What the watchdog shuts is a ``dup`` of the descriptor made once per
connection, closed with it, and shut down or closed only under one lock, so a
shutdown can never hit a descriptor number that was closed and reused by
another connection, and a kept-alive request costs no system call.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests.adapters
import urllib3.connection
import urllib3.connectionpool

_CURRENT = threading.local()


class Attempt:
    """One attempt's deadline and the connection it is using."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        # The deadline passed while the attempt ran.
        self.expired = False
        # The deadline shut a connection the attempt was using: what it read may be cut.
        self.cut = False
        self._lock = threading.Lock()
        self._connections: list[_WatchedHTTPConnection] = []
        self._done = False

    def watch(self, connection: _WatchedHTTPConnection) -> None:
        with self._lock:
            if self._done:
                return
            if self.expired:  # expired before this connection was made or reused
                self.cut = True
                _shutdown(connection.deadline_handle)
            elif connection not in self._connections:
                self._connections.append(connection)

    def release(self, connection: _WatchedHTTPConnection) -> None:
        """The connection went back to the pool: this attempt no longer uses it."""
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            # Under the lock: a connection being released waits, so it is never
            # shut after it is back in the pool.
            for connection in self._connections:
                self.cut = True
                _shutdown(connection.deadline_handle)
            self._connections = []

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._connections = []


# Shutting a handle down and closing it never overlap: see the module docstring.
_HANDLE_LOCK = threading.Lock()


def _shutdown(handle: socket.socket | None) -> None:
    if handle is None:
        return
    with _HANDLE_LOCK, contextlib.suppress(OSError):
        handle.shutdown(socket.SHUT_RDWR)


def _new_handle(sock: socket.socket) -> socket.socket | None:
    try:
        return socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return None


def _close_handle(handle: socket.socket | None) -> None:
    if handle is not None:
        with _HANDLE_LOCK:
            handle.close()


class DeadlineWatchdog:
    """One daemon thread that expires attempts; it sleeps until the earliest deadline."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._active: set[Attempt] = set()
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def attempt(self, deadline: float) -> Iterator[Attempt]:
        """Run the body as one attempt of the calling thread, ended at ``deadline``."""
        attempt = Attempt(deadline)
        with self._cond:
            self._active.add(attempt)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="attempt-deadline-watchdog", daemon=True
                )
                self._thread.start()
            if deadline < self._wake_at:
                self._cond.notify()
        _CURRENT.attempt = attempt
        try:
            yield attempt
        finally:
            _CURRENT.attempt = None
            with self._cond:
                self._active.discard(attempt)
            attempt.finish()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = self._clock()
                due = [a for a in self._active if a.deadline <= now]
                for attempt in due:
                    self._active.discard(attempt)
                    attempt.expire()
                self._wake_at = min((a.deadline for a in self._active), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    deadline_handle: socket.socket | None = None
    # The attempt using this connection now, until it goes back to the pool.
    deadline_attempt: Attempt | None = None

    def _watch(self) -> None:
        attempt: Attempt | None = getattr(_CURRENT, "attempt", None)
        if attempt is not None:
            self.deadline_attempt = attempt
            attempt.watch(self)

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _close_handle(self.deadline_handle)
        # The raw socket, before any TLS handshake, which can be slow too.
        self.deadline_handle = _new_handle(sock)
        self._watch()
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # kept alive: no _new_conn this time
            self._watch()
        super().request(*args, **kwargs)

    def close(self) -> None:
        super().close()
        _close_handle(self.deadline_handle)
        self.deadline_handle = None

    def released(self) -> None:
        attempt, self.deadline_attempt = self.deadline_attempt, None
        if attempt is not None:
            attempt.release(self)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection, _WatchedHTTPConnection):
    pass


class _ReleasingPool:
    """Mixed into the pools: a connection put back leaves its attempt first."""

    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, _WatchedHTTPConnection):
            conn.released()
        super()._put_conn(conn)  # type: ignore[misc]


class _WatchedHTTPPool(_ReleasingPool, urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(_ReleasingPool, urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """An HTTPAdapter whose connections report their sockets to the current attempt."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }
