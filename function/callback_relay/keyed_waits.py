"""Keyed waits: a wait or an event in, the store decides, the claimed callbacks are called.

The flow of one message (docs/events.md):

1. **Wait** (relay topic): the URL policy and ALLOWED_WORKFLOWS are checked, and
   a refused URL is never stored. The store then either keeps the waiter, or
   hands it the oldest live event its execution has not received; then its
   callback is called at once.
2. **Event** (relay topic, or a topic of EVENT_TOPICS): the store gives it to
   the oldest waiter of every waiting execution (a claim each) and keeps it for
   later waits while its TTL lasts. Then each claimed callback is called, in
   parallel, each on its own: one dead (404), busy (429) or refused waiter never
   keeps the others from being resumed.
3. Every call that ended (delivered, gone, refused, expired) is confirmed in the
   store. Calls that met a transient failure stay claimed and the message is
   redelivered; the redelivered message re-calls only those.

Each call is logged on its own line (the same outcomes as a direct resume), and
the message's outcome on one more (``wait_registered``, ``event_received``,
``duplicate``). The URL policy is checked again before every call.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from callback_relay import structured_log
from callback_relay.correlation import (
    ChannelState,
    Claim,
    EventDecision,
    WaitDecision,
    Waiter,
    digest,
    on_confirm,
    on_event,
    on_wait,
)
from callback_relay.errors import (
    CallbackUrlRefused,
    ConfigError,
    DeliveryDeferred,
    DeliveryExpired,
    MessageRejected,
    RedeliveryRequested,
)
from callback_relay.event_store import (
    EVENTS,
    GOOGLE_ORIGIN,
    TTL_FIELD,
    WAITS,
    Change,
    Document,
    FirestoreEventStore,
    StoreUnavailable,
    emulator_origin,
    string_value,
    timestamp,
)
from callback_relay.event_topics import EventTopic, EventTopics, event_payload
from callback_relay.keyed_message import (
    EVENT,
    MAX_TTL_SECONDS,
    RELAY_SOURCE,
    WAIT,
    EventMessage,
    WaitMessage,
    check_key,
    keyed_kind,
    parse_event,
    parse_wait,
    unknown_kind,
)
from callback_relay.message import encode_payload
from callback_relay.outcome_log import (
    OUTCOME_BY_KIND,
    SEVERITY,
    LogContext,
    OutcomeLog,
    RelayOutcome,
    outcome_of,
)
from callback_relay.outcomes import Outcome, Reason

if TYPE_CHECKING:
    import requests

    from callback_relay.callback_client import CallbackClient, CallbackSender
    from callback_relay.callback_url_policy import CallbackUrlPolicy
    from callback_relay.config import Settings
    from callback_relay.pubsub_event import PubSubDelivery

# Calls of one event in flight at once; the HTTP pool has one connection per thread.
MAX_PARALLEL_CALLS = 8
# An event's id is remembered this long (Pub/Sub keeps a message at most 7 days).
EVENT_ID_MEMORY_SECONDS = MAX_TTL_SECONDS


@dataclasses.dataclass(frozen=True)
class KeyedEvent:
    """An event, from the relay topic or an existing one, ready for the store."""

    source: str
    key: str
    event_id: str  # the publisher's id, else the Pub/Sub message id
    payload: bytes  # compact JSON
    ttl_seconds: int
    published_at: str

    @property
    def doc_id(self) -> str:
        return digest(self.source, self.key, self.event_id)

    def body(self) -> bytes:
        """What the waiting step receives (its ``payload`` is the JSON as published)."""
        head = json.dumps(
            {
                "key": self.key,
                "source": self.source,
                "event_id": self.event_id,
                "published_at": self.published_at,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return head[:-1].encode("utf-8") + b',"payload":' + self.payload + b"}"


@dataclasses.dataclass(frozen=True)
class CallResult:
    claim: Claim
    outcome: RelayOutcome
    final: bool


class KeyedWaits:
    """The keyed path of the relay: imported and built only when EVENT_STORE is set."""

    def __init__(
        self,
        store: FirestoreEventStore,
        policy: CallbackUrlPolicy,
        client: CallbackSender,
        outcomes: OutcomeLog,
        max_message_bytes: int,
        topics: EventTopics | None = None,
        default_ttl_seconds: int = 3600,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        # The relay's own: the URL policy, the callback client and the outcome lines.
        self.policy = policy
        self.client = client
        self.outcomes = outcomes
        self.max_message_bytes = max_message_bytes
        self.topics = topics or EventTopics()
        self.default_ttl_seconds = default_ttl_seconds
        self.now = now

    def handles(self, delivery: PubSubDelivery) -> bool:
        """Whether this delivery is keyed: from an event topic, or with a ``kind``."""
        if self.topics.for_source(delivery.source) is not None:
            return True
        return keyed_kind(delivery.data) is not None

    def relay(self, delivery: PubSubDelivery, key: str, context: LogContext) -> RelayOutcome:
        """The outcome of a keyed message; MessageRejected for a broken one on the relay topic."""
        max_bytes = self.max_message_bytes
        topic = self.topics.for_source(delivery.source)
        if topic is not None:
            try:
                return self._event(self._topic_event(topic, delivery, max_bytes), context)
            except MessageRejected as exc:  # foreign data: never a fail-fast target
                return self.outcomes.rejected(Outcome.MESSAGE_REJECTED, exc, context)
        kind = keyed_kind(delivery.data) or ""
        if kind == WAIT:
            return self._wait(parse_wait(delivery.data, max_bytes), context)
        if kind == EVENT:
            return self._event(
                self._relay_event(parse_event(delivery.data, max_bytes), delivery), context
            )
        raise unknown_kind(kind)

    # -- events ----------------------------------------------------------------------

    def _relay_event(self, message: EventMessage, delivery: PubSubDelivery) -> KeyedEvent:
        ttl = self.default_ttl_seconds if message.ttl_seconds is None else message.ttl_seconds
        event_id = message.event_id or delivery.message_id
        return KeyedEvent(
            RELAY_SOURCE, message.key, event_id, message.payload, ttl, self._published(delivery)
        )

    def _topic_event(
        self, topic: EventTopic, delivery: PubSubDelivery, max_bytes: int
    ) -> KeyedEvent:
        size = len(delivery.data) + sum(len(k) + len(v) for k, v in delivery.attributes.items())
        if size > max_bytes:
            raise MessageRejected(
                Reason.TOO_LARGE,
                f"message data and attributes are {size} bytes; the limit is {max_bytes}",
            )
        key = check_key(topic.key.render(delivery.attributes, delivery.data))
        event_id = delivery.message_id
        if topic.event_id is not None:
            event_id = check_key(
                topic.event_id.render(delivery.attributes, delivery.data), "event_id"
            )
        payload = encode_payload(event_payload(delivery.data, delivery.attributes))
        return KeyedEvent(
            topic.source,
            key,
            event_id,
            payload,
            self.default_ttl_seconds,
            self._published(delivery),
        )

    def _published(self, delivery: PubSubDelivery) -> str:
        if delivery.publish_time:
            return delivery.publish_time
        return timestamp(self.now())

    def _event(self, event: KeyedEvent, context: LogContext) -> RelayOutcome:
        now = self.now()
        fields = {"source": event.source, "key": event.key, "event_id": event.event_id}

        def decide(
            state: ChannelState, docs: dict[str, Document | None]
        ) -> tuple[EventDecision, bool, list[Change]]:
            seen = next(iter(docs.values()))
            seen_seq = seen.integer("seq") if seen is not None else None
            decision = on_event(state, event.doc_id, seen_seq, event.ttl_seconds, now)
            if decision.kind == "duplicate":
                return decision, False, []
            return decision, True, [self._event_doc(event, decision, now)]

        decision = self._update(
            event.source, event.key, [(EVENTS, event.doc_id)], decide, context, fields
        )
        results = self._call_all(decision.claims, event.body(), event, context)
        deferred = [r for r in results if not r.final]
        summary = (
            f"event {decision.seq} on {event.source}/{event.key}: "
            f"resumed {sum(r.outcome.outcome is Outcome.DELIVERED for r in results)}"
            f" of {len(results)} claimed"
        )
        if decision.kind == "duplicate":
            name, reason = (
                Outcome.DUPLICATE,
                f"repeated {summary} (re-called only its unconfirmed claims)",
            )
        else:
            kept = f"kept for {event.ttl_seconds} s" if decision.buffered else "not kept (ttl 0)"
            name, reason = Outcome.EVENT_RECEIVED, f"{summary}; {kept}"
        outcome = self._outcome(name, reason)
        keyed = {**fields, "seq": decision.seq, "claimed": len(results), "deferred": len(deferred)}
        if deferred:
            self.outcomes.write(
                structured_log.WARNING,
                self._outcome(Outcome.REDELIVERY_REQUESTED, reason),
                context,
                keyed=keyed,
            )
            raise RedeliveryRequested(
                f"{len(deferred)} of {len(results)} callbacks not yet delivered; {summary}"
            )
        self.outcomes.write(structured_log.INFO, outcome, context, keyed=keyed)
        return outcome

    def _event_doc(self, event: KeyedEvent, decision: EventDecision, now: float) -> Change:
        fields: dict[str, Any] = {
            "source": string_value(event.source),
            "key": string_value(event.key),
            "event_id": string_value(event.event_id),
            "published_at": string_value(event.published_at),
            "seq": {"integerValue": str(decision.seq)},
            TTL_FIELD: {
                "timestampValue": timestamp(now + max(event.ttl_seconds, EVENT_ID_MEMORY_SECONDS))
            },
        }
        if decision.buffered:
            fields["payload"] = string_value(event.payload.decode("utf-8"))
        return Change(EVENTS, event.doc_id, fields)

    # -- waits -----------------------------------------------------------------------

    def _wait(self, wait: WaitMessage, context: LogContext) -> RelayOutcome:
        if wait.source != RELAY_SOURCE and wait.source not in self.topics:
            known = ", ".join(sorted({RELAY_SOURCE, *self.topics.sources}))
            raise MessageRejected(
                Reason.UNKNOWN_SOURCE, f"source {wait.source[:100]!a} is not one of: {known}"
            )
        try:
            target = self.policy.check(wait.callback_url)
        except CallbackUrlRefused as exc:
            return self.outcomes.rejected(Outcome.URL_REFUSED, exc, context)
        now = self.now()
        fields = {"source": wait.source, "key": wait.key}
        if wait.expires_at.timestamp() <= now:
            outcome = self._outcome(Outcome.EXPIRED, f"expired at {wait.expires_at.isoformat()}")
            self.outcomes.write(
                structured_log.WARNING,
                dataclasses.replace(outcome, target=target),
                context,
                replay=True,
                keyed=fields,
            )
            return outcome
        execution = f"{target.project}/{target.location}/{target.workflow}/{target.execution}"
        waiter = Waiter(
            wait.callback_url, wait.method, wait.expires_at.timestamp(), digest(execution), now
        )
        wait_doc = digest(wait.source, wait.key, wait.callback_url)

        def decide(
            state: ChannelState, docs: dict[str, Document | None]
        ) -> tuple[WaitDecision, bool, list[Change]]:
            seen = next(iter(docs.values())) is not None
            decision = on_wait(state, waiter, seen, now)
            if seen:
                return decision, False, []
            doc = Change(
                WAITS,
                wait_doc,
                {
                    "source": string_value(wait.source),
                    "key": string_value(wait.key),
                    TTL_FIELD: {"timestampValue": timestamp(waiter.expires)},
                },
            )
            return decision, True, [doc]

        decision = self._update(wait.source, wait.key, [(WAITS, wait_doc)], decide, context, fields)
        if decision.kind == "registered":
            outcome = self._outcome(
                Outcome.WAIT_REGISTERED,
                f"waiting on {wait.source}/{wait.key} until {wait.expires_at.isoformat()}",
            )
            self.outcomes.write(
                structured_log.INFO,
                dataclasses.replace(outcome, target=target),
                context,
                keyed=fields,
            )
            return outcome
        if decision.kind in ("waiting", "done"):
            what = "still waiting" if decision.kind == "waiting" else "already resumed or expired"
            outcome = self._outcome(Outcome.DUPLICATE, f"a repeated wait: {what}")
            self.outcomes.write(structured_log.INFO, outcome, context, keyed=fields)
            return outcome
        assert decision.claim is not None
        stored = self.store.get(EVENTS, decision.claim.event) if decision.claim.event else None
        payload = stored.string("payload") if stored is not None else None
        if stored is None or payload is None:
            # A claim of an event that is not kept: its own redelivery calls it.
            outcome = self._outcome(
                Outcome.DUPLICATE, "a repeated wait: the event's redelivery calls it"
            )
            self.outcomes.write(structured_log.INFO, outcome, context, keyed=fields)
            return outcome
        event = KeyedEvent(
            wait.source,
            wait.key,
            stored.string("event_id") or "",
            payload.encode("utf-8"),
            0,
            stored.string("published_at") or "",
        )
        [result] = self._call_all((decision.claim,), event.body(), event, context)
        if not result.final:
            raise RedeliveryRequested(f"callback not delivered: {result.outcome.reason}")
        return result.outcome

    # -- calls -----------------------------------------------------------------------

    def _call_all(
        self,
        claims: tuple[Claim, ...],
        body: bytes,
        event: KeyedEvent,
        context: LogContext,
    ) -> list[CallResult]:
        if not claims:
            return []
        if len(claims) == 1:
            results = [self._call(claims[0], body, event, context)]
        else:
            workers = min(len(claims), MAX_PARALLEL_CALLS)
            with concurrent.futures.ThreadPoolExecutor(workers, "keyed-call") as pool:
                results = list(pool.map(lambda c: self._call(c, body, event, context), claims))
        confirmed = [(r.claim.waiter.url, r.claim.seq) for r in results if r.final]
        if confirmed:

            def decide(
                state: ChannelState, _: dict[str, Document | None]
            ) -> tuple[None, bool, list[Change]]:
                on_confirm(state, confirmed, self.now())
                return None, True, []

            fields = {"source": event.source, "key": event.key, "event_id": event.event_id}
            self._update(event.source, event.key, [], decide, context, fields)
        return results

    def _call(
        self,
        claim: Claim,
        body: bytes,
        event: KeyedEvent,
        context: LogContext,
    ) -> CallResult:
        """One claimed callback: the policy again, the expiry, then the call; never raises."""
        fields = {
            "source": event.source,
            "key": event.key,
            "event_id": event.event_id,
            "seq": claim.seq,
        }
        waiter = claim.waiter
        try:
            target = self.policy.check(waiter.url)
        except CallbackUrlRefused as exc:
            outcome = self._outcome(Outcome.URL_REFUSED, f"{exc.reason}: {exc.detail}", exc.reason)
            self.outcomes.write(SEVERITY[Outcome.URL_REFUSED], outcome, context, keyed=fields)
            return CallResult(claim, outcome, True)
        when = datetime.datetime.fromtimestamp(waiter.expires, datetime.UTC).isoformat()
        expires_in = waiter.expires - self.now()
        if expires_in <= 0:
            outcome = dataclasses.replace(
                self._outcome(Outcome.EXPIRED, f"the wait expired at {when}"), target=target
            )
            self.outcomes.write(SEVERITY[Outcome.EXPIRED], outcome, context, keyed=fields)
            return CallResult(claim, outcome, True)
        key = "k-" + digest(event.source, event.key, event.event_id, waiter.url)
        try:
            # The wait's expiry bounds the retries too: no attempt starts after it.
            result = self.client.deliver(waiter.method, target.url, body, key, expires_in)
        except DeliveryDeferred as exc:
            outcome = outcome_of(exc.result, target, Outcome.REDELIVERY_REQUESTED)
            self.outcomes.write(
                SEVERITY[Outcome.REDELIVERY_REQUESTED], outcome, context, keyed=fields
            )
            return CallResult(claim, outcome, False)
        except DeliveryExpired as exc:
            last = outcome_of(exc.result, target, Outcome.EXPIRED)
            reason = f"the wait expired at {when} after {last.attempts} attempt(s); last: "
            outcome = dataclasses.replace(last, reason=reason + last.reason)
            self.outcomes.write(SEVERITY[Outcome.EXPIRED], outcome, context, keyed=fields)
            return CallResult(claim, outcome, True)
        name = OUTCOME_BY_KIND[result.classification.kind]
        outcome = outcome_of(result, target, name)
        self.outcomes.write(SEVERITY[name], outcome, context, keyed=fields)
        return CallResult(claim, outcome, True)

    # -- helpers ---------------------------------------------------------------------

    def _update(
        self,
        source: str,
        key: str,
        others: list[tuple[str, str]],
        decide: Any,
        context: LogContext,
        fields: dict[str, Any],
    ) -> Any:
        try:
            return self.store.update(source, key, others, decide, now=self.now)
        except StoreUnavailable as exc:
            outcome = self._outcome(Outcome.REDELIVERY_REQUESTED, f"event store unavailable: {exc}")
            self.outcomes.write(structured_log.WARNING, outcome, context, keyed=fields)
            raise RedeliveryRequested(f"event store unavailable: {exc}") from None

    @staticmethod
    def _outcome(name: Outcome, reason: str, code: Reason | None = None) -> RelayOutcome:
        return RelayOutcome(name, reason, code)


def build_keyed_waits(
    settings: Settings,
    session: requests.Session,
    client: CallbackClient,
    policy: CallbackUrlPolicy,
    outcomes: OutcomeLog,
) -> KeyedWaits:
    """The keyed path from the settings: the store on the relay's own session."""
    keyed = settings.keyed
    assert keyed is not None
    origin = GOOGLE_ORIGIN
    if keyed.emulator_host is not None:
        try:
            origin = emulator_origin(keyed.emulator_host)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    store = FirestoreEventStore(
        session,
        None if keyed.emulator_host is not None else client.tokens,
        keyed.project,
        keyed.database,
        origin,
        # Its own timeouts (5 s, 15 s), not the callbacks': within the same deadline.
        deadline_seconds=settings.retry_deadline_seconds,
    )
    return KeyedWaits(
        store,
        policy,
        client,
        outcomes,
        settings.max_message_bytes,
        keyed.topics,
        keyed.default_ttl_seconds,
    )
