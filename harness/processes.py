"""Subprocesses that tests start and always stop: no orphans, logs kept in files.

Each process runs in its own session (process group), so stopping it reaches
every child too (gcloud -> java, functions-framework -> gunicorn workers).
Stopping sends SIGTERM to the group, waits, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from harness.ports import wait_for_port


class ProcessStartError(RuntimeError):
    """The process exited or never became ready; the message carries its log tail."""


class ManagedProcess:
    """One subprocess with its stdout+stderr copied to a log file, line by line."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._lines_lock = threading.Condition()
        self._reader: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, name=f"log-{self.name}", daemon=True)
        self._reader.start()
        return self

    def _pump(self) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        with self.log_path.open("a", encoding="utf-8") as log:
            for raw in self.popen.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                with self._lines_lock:
                    self._lines.append(line)
                    self._lines_lock.notify_all()
        with self._lines_lock:
            self._lines_lock.notify_all()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the whole group, wait up to `grace` s, then SIGKILL. Safe to call twice."""
        if self.popen is None:
            return None
        pgid = self.popen.pid  # start_new_session: group id == pid
        if self.popen.poll() is None:
            signal_group(pgid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                signal_group(pgid, signal.SIGKILL)
                self.popen.wait(timeout=grace)
        # Children that ignored SIGTERM may outlive the leader: sweep the group.
        signal_group(pgid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout=grace)
        return self.popen.returncode

    # -- output ----------------------------------------------------------------

    def lines(self) -> list[str]:
        with self._lines_lock:
            return list(self._lines)

    def output(self) -> str:
        return "\n".join(self.lines())

    def tail(self, count: int = 40) -> str:
        return "\n".join(self.lines()[-count:])

    def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """Block until a line matches `pattern`; raise ProcessStartError on exit or timeout."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._lines_lock:
            while True:
                for line in self._lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self._lines)
                remaining = deadline - time.monotonic()
                exited = self.popen is not None and self.popen.poll() is not None
                if exited and (self._reader is None or not self._reader.is_alive()):
                    raise ProcessStartError(
                        f"{self.name} exited with {self.popen.returncode if self.popen else None}"
                        f" before printing {regex.pattern!r}; log {self.log_path}:\n"
                        f"{self.tail_unlocked()}"
                    )
                if remaining <= 0:
                    raise ProcessStartError(
                        f"{self.name} printed no {regex.pattern!r} within {timeout:g} s;"
                        f" log {self.log_path}:\n{self.tail_unlocked()}"
                    )
                self._lines_lock.wait(timeout=min(remaining, 0.2))

    def tail_unlocked(self, count: int = 40) -> str:
        return "\n".join(self._lines[-count:])

    def wait_for_port(self, host: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise ProcessStartError(
                    f"{self.name} exited with {self.popen.returncode if self.popen else None};"
                    f" log {self.log_path}:\n{self.tail()}"
                )
            if wait_for_port(host, port, timeout=0.25):
                return
        raise ProcessStartError(
            f"{self.name} did not listen on {host}:{port} within {timeout:g} s;"
            f" log {self.log_path}:\n{self.tail()}"
        )


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextlib.contextmanager
def managed_process(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_line: str | None = None,
    ready_port: tuple[str, int] | None = None,
    ready_timeout: float = 30.0,
    stop_grace: float = 5.0,
) -> Iterator[ManagedProcess]:
    """Start a process, wait for its readiness line and/or port, and always stop it."""
    process = ManagedProcess(name, argv, log_path, env=env, cwd=cwd)
    try:
        process.start()
        if ready_line is not None:
            process.wait_for_line(ready_line, ready_timeout)
        if ready_port is not None:
            process.wait_for_port(*ready_port, timeout=ready_timeout)
        yield process
    finally:
        process.stop(grace=stop_grace)


def child_env(extra: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment plus `extra`, minus `drop`; unbuffered Python output."""
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env
