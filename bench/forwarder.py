"""Eventarc-shaped delivery from a pull subscription, concurrent, for the soak.

Eventarc's Pub/Sub trigger POSTs a binary CloudEvent (``ce-*`` headers, body
``{"message": {...}, "subscription": ...}``) and treats a non-2xx answer as a
failure, so the subscription's retry policy and dead-letter policy apply.
Here: pull batches, POST each message from a pool of threads over keep-alive
sessions, ack on 2xx, nack (ack deadline 0) otherwise.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import requests

from tools.eventarc_forwarder import pulled_cloudevent


class Forwarder:
    def __init__(
        self,
        subscriber: Any,
        subscription: str,
        topic: str,
        target: str,
        concurrency: int = 16,
        request_timeout: float = 60.0,
    ) -> None:
        self.subscriber = subscriber
        self.subscription = subscription
        self.topic = topic
        self.target = target
        self.request_timeout = request_timeout
        self.pool = concurrent.futures.ThreadPoolExecutor(concurrency, "forward")
        self.in_flight = threading.BoundedSemaphore(concurrency * 2)
        self.local = threading.local()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._pull_loop, name="pull", daemon=True)

    def start(self) -> Forwarder:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _pull_loop(self) -> None:
        from google.api_core import exceptions as api_exceptions

        while not self.stop_event.is_set():
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": 20}, timeout=2
                )
            except api_exceptions.DeadlineExceeded:
                continue
            except Exception as exc:  # noqa: BLE001 - keep going; recorded for the summary
                self._record(-2, f"pull: {type(exc).__name__}: {exc}")
                self.stop_event.wait(0.5)
                continue
            for item in response.received_messages:
                # Bounded in-flight work: stop pulling while the pool is busy.
                while not self.in_flight.acquire(timeout=0.5):
                    if self.stop_event.is_set():
                        return
                self.pool.submit(self._forward, item)

    def _session(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            self.local.session = session
        return session

    def _forward(self, item: Any) -> None:
        try:
            headers, body = pulled_cloudevent(item.message, self.subscription, self.topic)
            try:
                status = (
                    self._session()
                    .post(self.target, data=body, headers=headers, timeout=self.request_timeout)
                    .status_code
                )
            except requests.RequestException as exc:
                status = -1
                self.local.session = None
                self._record(status, f"post: {type(exc).__name__}")
            else:
                self._record(status)
            request: dict[str, Any] = {"subscription": self.subscription, "ack_ids": [item.ack_id]}
            if 200 <= status < 300:
                self.subscriber.acknowledge(request=request)
            else:
                self.subscriber.modify_ack_deadline(request={**request, "ack_deadline_seconds": 0})
        except Exception as exc:  # noqa: BLE001 - the message is redelivered after its deadline
            self._record(-3, f"ack: {type(exc).__name__}: {exc}")
        finally:
            self.in_flight.release()

    def _record(self, status: int, error: str | None = None) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if error is not None and len(self.errors) < 50:
                self.errors.append(error)
