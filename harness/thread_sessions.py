"""One keep-alive requests.Session per thread, closed all together.

A Session is not safe to share between threads, and a new one per request would
reconnect every time. Closing them all on stop matters: an idle keep-alive
connection holds up gunicorn's graceful shutdown of the function.
"""

from __future__ import annotations

import threading

import requests


class ThreadSessions:
    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        """This thread's session; it ignores proxy settings from the environment."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def discard(self) -> None:
        """Forget this thread's session (after a failed request: reconnect next time)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()
        self._local.session = None

    def close(self) -> None:
        with self._lock:
            for session in self._all:
                session.close()
            self._all.clear()
