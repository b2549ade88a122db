"""The semantics of keyed waits, as pure functions over the state of one (source, key).

docs/events.md has the table; each rule is a few lines here:

- an event resumes every execution waiting on its (source, key), each through
  its oldest waiter, and stays for later waits while its TTL lasts;
- a wait that finds a live event it has not received is resumed at once, with
  the oldest such event (an execution's ``cursor`` is the last event it got);
- an event is never given to an execution twice, whichever way the wait and the
  event meet;
- nothing expired is ever handed out: waiters, claims and events past their
  expiry are dropped before every decision.

A ``claim`` is a waiter that an event was given to and whose callback has not yet
been confirmed called. A redelivered event or wait re-calls only its claims.

The store (event_store.py) runs each function between a read and a commit that
is conditioned on the state read (an optimistic transaction), so a wait and an
event for the same (source, key) always meet: whichever commits second saw the
first. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from callback_relay.errors import MessageRejected
from callback_relay.outcomes import Reason

# Bounds per (source, key); docs/events.md derives them from Firestore's limits.
MAX_WAITERS_PER_KEY = 250  # live waiters plus claims not yet confirmed
MAX_EVENTS_PER_KEY = 250  # events kept for later waits
# A Firestore document is at most 1 MiB; the state is one string field of it.
MAX_STATE_BYTES = 900_000
STATE_VERSION = 1


def digest(*parts: str) -> str:
    """A short, stable id for a URL, an execution or an event id (Firestore-safe)."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode("utf-8", "surrogatepass"))
        hasher.update(b"\x00")
    return hasher.hexdigest()[:40]


@dataclasses.dataclass(frozen=True)
class Waiter:
    url: str
    method: str
    expires: float  # epoch seconds: never called from then on
    execution: str  # digest of the execution's name, from the callback URL
    since: float

    def as_json(self) -> list[Any]:
        return [self.url, self.method, self.expires, self.execution, self.since]


@dataclasses.dataclass(frozen=True)
class Claim:
    """A waiter an event was given to; called, but not yet confirmed."""

    waiter: Waiter
    seq: int
    event: str = ""  # the event's document when its payload is kept there

    def as_json(self) -> list[Any]:
        return [*self.waiter.as_json(), self.seq, self.event]


@dataclasses.dataclass(frozen=True)
class Buffered:
    """An event kept for later waits; its payload is in its own document."""

    seq: int
    event: str  # digest: the event's document id
    expires: float


@dataclasses.dataclass
class ChannelState:
    next_seq: int = 1
    waiters: list[Waiter] = dataclasses.field(default_factory=list)
    claims: list[Claim] = dataclasses.field(default_factory=list)
    events: list[Buffered] = dataclasses.field(default_factory=list)
    cursors: dict[str, int] = dataclasses.field(default_factory=dict)

    # -- encoding: one compact JSON string ---------------------------------------

    def encode(self) -> str:
        return json.dumps(
            {
                "v": STATE_VERSION,
                "n": self.next_seq,
                "w": [w.as_json() for w in self.waiters],
                "c": [c.as_json() for c in self.claims],
                "e": [[b.seq, b.event, b.expires] for b in self.events],
                "x": self.cursors,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def decode(cls, text: str | None) -> ChannelState:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(
            next_seq=int(raw["n"]),
            waiters=[Waiter(*w) for w in raw["w"]],
            claims=[Claim(Waiter(*c[:5]), int(c[5]), str(c[6])) for c in raw["c"]],
            events=[Buffered(int(e[0]), str(e[1]), float(e[2])) for e in raw["e"]],
            cursors={str(k): int(v) for k, v in raw["x"].items()},
        )

    def copy(self) -> ChannelState:
        return ChannelState(
            self.next_seq,
            list(self.waiters),
            list(self.claims),
            list(self.events),
            dict(self.cursors),
        )

    @property
    def expire_at(self) -> float:
        """When everything in it has expired: the document's TTL field."""
        times = [w.expires for w in self.waiters]
        times += [c.waiter.expires for c in self.claims]
        times += [b.expires for b in self.events]
        return max(times, default=0.0)

    def prune(self, now: float) -> None:
        """Drop what expired; a cursor goes once no live event is at or before it."""
        self.waiters = [w for w in self.waiters if w.expires > now]
        self.claims = [c for c in self.claims if c.waiter.expires > now]
        self.events = [b for b in self.events if b.expires > now]
        oldest = min((b.seq for b in self.events), default=None)
        self.cursors = {
            e: seq for e, seq in self.cursors.items() if oldest is not None and oldest <= seq
        }


# -- decisions -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WaitDecision:
    """``registered``: stored; ``claimed``: resume now with event ``claim.seq``;
    ``recall``: a redelivered wait whose claim is not yet confirmed;
    ``waiting``/``done``: a redelivered wait, still waiting / already resumed."""

    kind: str
    claim: Claim | None = None
    event: Buffered | None = None


@dataclasses.dataclass(frozen=True)
class EventDecision:
    """``new``: event ``seq`` given to ``claims``, kept when ``buffered``;
    ``duplicate``: seen before; ``claims`` are its claims not yet confirmed."""

    kind: str
    seq: int
    claims: tuple[Claim, ...] = ()
    buffered: bool = False


def on_wait(state: ChannelState, waiter: Waiter, seen: bool, now: float) -> WaitDecision:
    """A wait arrives. ``seen``: this callback's wait was stored before (a redelivery)."""
    state.prune(now)
    if seen:
        for claim in state.claims:
            if claim.waiter.url == waiter.url:
                return WaitDecision("recall", claim)
        if any(w.url == waiter.url for w in state.waiters):
            return WaitDecision("waiting")
        return WaitDecision("done")
    cursor = state.cursors.get(waiter.execution, 0)
    for event in state.events:  # ascending seq: the oldest first
        if event.seq > cursor:
            claim = Claim(waiter, event.seq, event.event)
            state.claims.append(claim)
            state.cursors[waiter.execution] = event.seq
            return WaitDecision("claimed", claim, event)
    if len(state.waiters) + len(state.claims) >= MAX_WAITERS_PER_KEY:
        raise MessageRejected(
            Reason.TOO_MANY_WAITERS,
            f"this key already has {MAX_WAITERS_PER_KEY} waiters (the limit per key)",
        )
    state.waiters.append(waiter)
    return WaitDecision("registered")


def on_event(
    state: ChannelState,
    event: str,
    seen_seq: int | None,
    ttl_seconds: int,
    now: float,
) -> EventDecision:
    """An event arrives; ``seen_seq`` is its number when its id was seen before."""
    state.prune(now)
    if seen_seq is not None:
        pending = tuple(c for c in state.claims if c.seq == seen_seq)
        return EventDecision("duplicate", seen_seq, pending)
    if ttl_seconds > 0 and len(state.events) >= MAX_EVENTS_PER_KEY:
        raise MessageRejected(
            Reason.TOO_MANY_EVENTS,
            f"this key already keeps {MAX_EVENTS_PER_KEY} events (the limit per key)",
        )
    seq = state.next_seq
    state.next_seq += 1
    buffered = ttl_seconds > 0
    kept_in = event if buffered else ""
    taken: list[Claim] = []
    served: set[str] = set()
    for waiter in sorted(state.waiters, key=lambda w: w.since):
        if waiter.execution in served:
            continue  # at most once per execution: its other waiters get the next event
        served.add(waiter.execution)
        taken.append(Claim(waiter, seq, kept_in))
    claimed = {id(c.waiter) for c in taken}
    state.waiters = [w for w in state.waiters if id(w) not in claimed]
    state.claims.extend(taken)
    if buffered:
        state.events.append(Buffered(seq, event, now + ttl_seconds))
        for claim in taken:
            state.cursors[claim.waiter.execution] = seq
    return EventDecision("new", seq, tuple(taken), buffered)


def on_confirm(state: ChannelState, confirmed: list[tuple[str, int]], now: float) -> None:
    """Drop the claims whose calls ended (delivered, gone, refused, expired)."""
    state.prune(now)
    done = set(confirmed)
    state.claims = [c for c in state.claims if (c.waiter.url, c.seq) not in done]


def check_size(encoded: str) -> None:
    size = len(encoded.encode("utf-8"))
    if size > MAX_STATE_BYTES:
        raise MessageRejected(
            Reason.KEY_FULL,
            f"this key's state would be {size} bytes; a Firestore document holds at most 1 MiB",
        )
