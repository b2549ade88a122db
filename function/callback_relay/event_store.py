"""The store of keyed waits: Firestore in Native mode, through its REST API.

Why REST through the relay's own session and not google-cloud-firestore: the
measurement in docs/events.md ("Choosing the Firestore client"): the client
library adds grpc and protobuf to the cold start and the memory of every
instance, and is not faster per operation here. Imported only when keyed waits
are on (``EVENT_STORE=firestore``).

Documents (each with an ``expire_at`` timestamp for a Firestore TTL policy; the
relay also ignores whatever has expired, since TTL deletion can lag by a day,
https://cloud.google.com/firestore/docs/ttl):

- ``relay_channels/{digest(source, key)}``: the state of one (source, key)
  (correlation.ChannelState) as one JSON string field;
- ``relay_events/{digest(source, key, event id)}``: one per event: its number,
  and its payload while it is kept for later waits. Created only if absent, so
  an event id is taken once;
- ``relay_waits/{digest(source, key, callback URL)}``: one per wait, created
  only if absent, so a redelivered wait is recognised.

Race-free by construction: every change is one atomic commit of the channel and
its event or wait document, conditioned on the channel's ``updateTime`` as read
(or on its absence) and on the other document's absence. A commit that lost a
race fails its precondition, and the change is decided again on a fresh read.
That is an optimistic transaction
(https://cloud.google.com/firestore/docs/reference/rest/v1/Precondition,
https://cloud.google.com/firestore/docs/reference/rest/v1/projects.databases.documents/commit):
whichever of a wait and an event commits second has read the first. It takes no
locks, so contention costs a re-read, never a lock wait.

Firestore down, slow or contended past the retry deadline is ``StoreUnavailable``:
a transient failure, so the message is redelivered, never acknowledged early.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import requests

from callback_relay.correlation import ChannelState, check_size, digest
from callback_relay.errors import TokenUnavailable

GOOGLE_ORIGIN = "https://firestore.googleapis.com"
CHANNELS, EVENTS, WAITS = "relay_channels", "relay_events", "relay_waits"
TTL_FIELD = "expire_at"
BACKOFF_BASE_SECONDS = 0.02
BACKOFF_CAP_SECONDS = 1.0
# Answers after which the same request may work: contention, overload, outages.
_CONFLICT = {"ABORTED", "FAILED_PRECONDITION", "ALREADY_EXISTS"}
_HOST_PORT_RE = re.compile(r"[A-Za-z0-9.-]+:[0-9]{1,5}|\[[0-9A-Fa-f:]+\]:[0-9]{1,5}")
T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """Firestore did not take the change within the deadline; the message is redelivered."""


class TokenSource(Protocol):
    def token(self, wait_seconds: float | None = None) -> str: ...

    def invalidate(self, token: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class Document:
    fields: dict[str, Any]
    update_time: str

    def string(self, name: str) -> str | None:
        value = self.fields.get(name, {})
        return value.get("stringValue") if isinstance(value, dict) else None

    def integer(self, name: str) -> int | None:
        value = self.fields.get(name, {})
        raw = value.get("integerValue") if isinstance(value, dict) else None
        return int(raw) if raw is not None else None


@dataclasses.dataclass(frozen=True)
class Change:
    """What a decision writes besides the channel: a document created only if absent."""

    collection: str
    doc_id: str
    fields: dict[str, Any]


def timestamp(epoch: float) -> str:
    when = datetime.datetime.fromtimestamp(max(epoch, 0.0), datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def string_value(text: str) -> dict[str, str]:
    return {"stringValue": text}


def emulator_origin(host: str) -> str:
    """``FIRESTORE_EMULATOR_HOST`` (host:port, plain HTTP) as an origin; ValueError otherwise."""
    if not _HOST_PORT_RE.fullmatch(host.strip()):
        raise ValueError(f"FIRESTORE_EMULATOR_HOST={host!r} must be host:port")
    return f"http://{host.strip()}"


class FirestoreEventStore:
    """Reads and conditional commits on one Firestore database."""

    def __init__(
        self,
        session: requests.Session,
        tokens: TokenSource | None,
        project: str,
        database: str = "(default)",
        origin: str = GOOGLE_ORIGIN,
        deadline_seconds: float = 30.0,
        timeout: tuple[float, float] = (5.0, 15.0),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session
        # None: the emulator, which takes any bearer ("owner" bypasses its rules).
        self.tokens = tokens
        self.root = f"projects/{project}/databases/{database}/documents"
        self.base = f"{origin}/v1/{self.root}"
        self.deadline_seconds = deadline_seconds
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self.conflicts = 0  # commits that lost a race (for tests and the benchmark)

    # -- names -------------------------------------------------------------------

    def name(self, collection: str, doc_id: str) -> str:
        return f"{self.root}/{collection}/{doc_id}"

    @staticmethod
    def channel_id(source: str, key: str) -> str:
        return digest(source, key)

    # -- the one operation: decide on a fresh read, commit if nothing changed --------

    def update(
        self,
        source: str,
        key: str,
        others: Sequence[tuple[str, str]],
        decide: Callable[[ChannelState, dict[str, Document | None]], tuple[T, bool, list[Change]]],
        now: Callable[[], float] = time.time,
    ) -> T:
        """Run ``decide`` on the channel of (source, key) and ``others`` until its commit holds.

        ``decide(state, others)`` mutates ``state`` and returns (result, whether the
        channel changed, documents to create). Nothing is written when it changed
        nothing. Raises StoreUnavailable at the deadline, and what ``decide`` raises.
        """
        deadline = self.clock() + self.deadline_seconds
        channel = self.name(CHANNELS, self.channel_id(source, key))
        names = [channel, *(self.name(c, d) for c, d in others)]
        attempt = 0
        last = "no attempt"
        while True:
            attempt += 1
            try:
                docs = self._batch_get(names, deadline)
                current = docs[channel]
                state = ChannelState.decode(current.string("state") if current else None)
                result, changed, creates = decide(state, {n: docs[n] for n in names[1:]})
                if not changed and not creates:
                    return result
                encoded = state.encode()
                check_size(encoded)
                writes = [self._channel_write(channel, source, key, state, encoded, current)]
                writes += [self._create(change) for change in creates]
                if self._commit(writes, deadline):
                    return result
                self.conflicts += 1
                last = "a concurrent change to the same key (precondition failed)"
            except _Retry as exc:
                last = str(exc)
            delay = random.uniform(  # noqa: S311 - jitter, not a secret
                0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
            )
            if self.clock() + delay >= deadline:
                raise StoreUnavailable(
                    f"Firestore did not take the change in {self.deadline_seconds:g} s"
                    f" ({attempt} attempts; last: {last})"
                )
            self.sleep(delay)

    def get(self, collection: str, doc_id: str) -> Document | None:
        """One document, read outside any change (event documents never change)."""
        deadline = self.clock() + self.deadline_seconds
        name = self.name(collection, doc_id)
        while True:
            try:
                return self._batch_get([name], deadline)[name]
            except _Retry as exc:
                if self.clock() + 0.05 >= deadline:
                    raise StoreUnavailable(f"Firestore did not answer a read: {exc}") from None
                self.sleep(0.05)

    # -- REST ----------------------------------------------------------------------

    def _channel_write(
        self,
        name: str,
        source: str,
        key: str,
        state: ChannelState,
        encoded: str,
        current: Document | None,
    ) -> dict[str, Any]:
        precondition = (
            {"updateTime": current.update_time} if current is not None else {"exists": False}
        )
        return {
            "update": {
                "name": name,
                "fields": {
                    "source": string_value(source),
                    "key": string_value(key),
                    "state": string_value(encoded),
                    TTL_FIELD: {"timestampValue": timestamp(state.expire_at)},
                },
            },
            "currentDocument": precondition,
        }

    def _create(self, change: Change) -> dict[str, Any]:
        return {
            "update": {
                "name": self.name(change.collection, change.doc_id),
                "fields": change.fields,
            },
            "currentDocument": {"exists": False},
        }

    def _headers(self, deadline: float) -> dict[str, str]:
        if self.tokens is None:
            return {"Authorization": "Bearer owner"}
        try:
            token = self.tokens.token(wait_seconds=max(deadline - self.clock(), 0.0))
        except TokenUnavailable as exc:
            raise _Retry(f"no access token: {exc}") from None
        return {"Authorization": f"Bearer {token}"}

    def _post(self, verb: str, body: dict[str, Any], deadline: float) -> requests.Response:
        headers = self._headers(deadline)
        remaining = max(deadline - self.clock(), 0.001)
        try:
            response = self.session.post(
                f"{self.base}:{verb}",
                data=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
                headers={**headers, "Content-Type": "application/json"},
                timeout=(min(self.timeout[0], remaining), min(self.timeout[1], remaining)),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise _Retry(f"{verb}: connection failed ({type(exc).__name__})") from None
        if response.status_code == 401 and self.tokens is not None:
            self.tokens.invalidate(headers["Authorization"].removeprefix("Bearer "))
        return response

    def _batch_get(self, names: list[str], deadline: float) -> dict[str, Document | None]:
        response = self._post("batchGet", {"documents": names}, deadline)
        if response.status_code != 200:
            raise _Retry(f"batchGet: {_error(response)}")
        found: dict[str, Document | None] = dict.fromkeys(names)
        for item in response.json():
            doc = item.get("found")
            if doc is not None:
                found[doc["name"]] = Document(doc.get("fields", {}), doc["updateTime"])
        return found

    def _commit(self, writes: list[dict[str, Any]], deadline: float) -> bool:
        """True when committed; False when a precondition failed (lost a race)."""
        response = self._post("commit", {"writes": writes}, deadline)
        if response.status_code == 200:
            return True
        status = _status(response)
        if status in _CONFLICT:
            return False
        raise _Retry(f"commit: {_error(response)}")


class _Retry(Exception):
    """A failed request that may work when tried again (5xx, 429, 403 while IAM settles, resets)."""


def _status(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["status"])
    except (ValueError, KeyError, TypeError):
        return ""


def _error(response: requests.Response) -> str:
    status = _status(response) or "no status"
    try:
        message = str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return f"HTTP {response.status_code} {status}: {message}"
