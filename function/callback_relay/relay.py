"""The relay itself: message in, callback out, one log line per outcome.

Both entry points call one method, ``relay_delivery`` (the CloudEvent entry
point first unwraps the Pub/Sub message with ``relay_event``). Every outcome
is final (the caller acknowledges the message) and leaves exactly one log
line, except ``RedeliveryRequested``, the only exception that leaves the
relay: for transient failures that outlived the in-process retries, and for
bugs. A bug (any other exception) is logged once as ``internal_error`` with
the replay record and turned into ``RedeliveryRequested``: the message is
kept, so it reaches the dead-letter topic and can be replayed after a fix,
instead of being acknowledged and lost.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from callback_relay import structured_log
from callback_relay.access_token import AccessTokenProvider
from callback_relay.callback_client import CallbackClient, CallbackSender, build_session
from callback_relay.callback_url_policy import CallbackUrlPolicy
from callback_relay.config import Settings, load_settings
from callback_relay.errors import (
    CallbackUrlRefused,
    DeliveryDeferred,
    DeliveryExpired,
    EventRejected,
    MessageRejected,
    RedeliveryRequested,
    Rejection,
)
from callback_relay.idempotency_key import idempotency_key
from callback_relay.keyed_message import keyed_kind, keyed_waits_off, unknown_kind
from callback_relay.message import (
    CallbackMessage,
    ReplyTo,
    fail_fast_target,
    parse_message_data,
)
from callback_relay.outcome_log import (
    OUTCOME_BY_KIND,
    SEVERITY,
    LogContext,
    OutcomeLog,
    RelayOutcome,
    outcome_of,
)
from callback_relay.outcomes import Outcome
from callback_relay.pubsub_event import (
    PubSubDelivery,
    as_text,
    clip,
    delivery_from_event,
    project_from_source,
    summarize,
)
from callback_relay.structured_log import bounded
from callback_relay.trace_context import TraceContext

if TYPE_CHECKING:
    from callback_relay.keyed_waits import KeyedWaits

# The producer's metadata is logged up to this size, then as its size and digest.
MAX_METADATA_BYTES = 4096
FAIL_FAST_ERROR_CODE = "INVALID_MESSAGE"
# Outcomes whose line carries the replay record: the message was not delivered.
_REPLAYED = frozenset({Outcome.CALLBACK_REJECTED})


class CallbackRelay:
    def __init__(
        self,
        settings: Settings,
        policy: CallbackUrlPolicy,
        client: CallbackSender,
        log: structured_log.StructuredLog,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        keyed: KeyedWaits | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.client = client
        self.log = log
        self.outcomes = OutcomeLog(log)
        self.now = now
        # Keyed waits (docs/events.md); None when off (EVENT_STORE unset).
        self.keyed = keyed

    # -- the public API: raw data in, outcome out ----------------------------

    def relay_event(
        self, event_id: Any, source: Any, data: Any, trace: TraceContext
    ) -> RelayOutcome:
        """Relay the Pub/Sub message inside a CloudEvent's data."""
        event_id = None if event_id is None else as_text(event_id, None)
        source = source if isinstance(source, str) else None
        try:
            delivery = delivery_from_event(event_id, source, data)
        except EventRejected as exc:
            replay = exc.replay
            message_id = replay.get("message_id") or event_id or ""
            context = self._context(
                message_id, trace, source, lambda: replay, lambda: summarize(replay)
            )
            return self.outcomes.rejected(Outcome.MESSAGE_REJECTED, exc, context)
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the message
            replay = {"event_id": event_id, "source": source, "data": as_text(data, 4096)}
            context = self._context(event_id or "", trace, source, lambda: replay)
            raise self._internal_error(exc, context) from None
        return self.relay_delivery(delivery, trace)

    def relay_delivery(self, delivery: PubSubDelivery, trace: TraceContext) -> RelayOutcome:
        """Relay one message: its data, its id (the idempotency key) and its trace.

        Returns the final outcome, or raises RedeliveryRequested; nothing else.
        """
        # base64 is 4/3 of the data: a record that cannot fit a log line is never
        # encoded (megabytes copied to be thrown away); its summary is logged instead.
        fits = _base64_length(len(delivery.data)) <= structured_log.MAX_LINE_BYTES
        context = self._context(
            delivery.message_id,
            trace,
            delivery.source,
            delivery.replay_record if fits else delivery.replay_summary,
            delivery.replay_summary,
        )
        if delivery.delivery_attempt is not None:
            context = context.with_fields(delivery_attempt=delivery.delivery_attempt)
        try:
            return self._relay(delivery, context)
        except RedeliveryRequested:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the message
            raise self._internal_error(exc, context) from None

    def reject_request(
        self,
        message_id: str,
        rejection: Rejection,
        trace: TraceContext,
        replay: dict[str, Any],
        source: str = "relay_http",
    ) -> RelayOutcome:
        """Log a request refused before its message was read (relay_http): final, one line."""
        context = self._context(message_id, trace, source, lambda: replay)
        return self.outcomes.rejected(Outcome.MESSAGE_REJECTED, rejection, context)

    # -- the steps -------------------------------------------------------------

    def _relay(self, delivery: PubSubDelivery, context: LogContext) -> RelayOutcome:
        key = idempotency_key(delivery.message_id)
        try:
            if self.keyed is not None and self.keyed.handles(delivery):
                return self.keyed.relay(delivery, key, context)
            kind = keyed_kind(delivery.data)  # one substring test when there is no kind
            if kind is not None:
                raise keyed_waits_off(kind) if kind in ("wait", "event") else unknown_kind(kind)
            message = parse_message_data(delivery.data, self.settings.max_message_bytes)
        except MessageRejected as exc:
            reply_to = None
            # Data that is not a JSON object names no callback (fail_fast_target
            # reads only the top level of a message too large to parse).
            if self.settings.fail_fast_invalid_messages and not exc.reason.is_syntax:
                reply_to = fail_fast_target(delivery.data)
            if reply_to is None:
                return self.outcomes.rejected(Outcome.MESSAGE_REJECTED, exc, context)
            return self._fail_fast(exc, reply_to, key, context)
        if message.metadata is not None:
            metadata = bounded(message.metadata, MAX_METADATA_BYTES)
            context = context.with_fields(metadata=metadata)
        return self._relay_message(message, key, context)

    def _fail_fast(
        self, rejected: MessageRejected, reply_to: ReplyTo, key: str, context: LogContext
    ) -> RelayOutcome:
        """Resume the waiting step with the rejection, so that it fails now, not at its timeout.

        The URL policy applies as to any other call: a refused URL is never
        called, and neither is one past the message's own expires_at.
        """
        try:
            target = self.policy.check(reply_to.callback_url)
        except CallbackUrlRefused as refused:
            return self._not_failed_fast(rejected, context, f"not attempted: {refused.reason}")
        expires_in = self._expires_in(reply_to.expires_at)
        if expires_in is not None and expires_in <= 0:
            return self._not_failed_fast(rejected, context, f"not attempted: {_expired(reply_to)}")
        body = invalid_message_body(rejected, key)
        try:
            result = self.client.deliver(reply_to.method, target.url, body, key, expires_in)
        except DeliveryDeferred as exc:
            outcome = outcome_of(exc.result, target, Outcome.REDELIVERY_REQUESTED)
            self.outcomes.write(
                structured_log.WARNING, outcome, context, rejected=str(rejected.reason)
            )
            raise RedeliveryRequested(
                f"error for {target.workflow_name} not delivered: {outcome.reason}"
            ) from None
        except DeliveryExpired as exc:
            last = outcome_of(exc.result, target, Outcome.MESSAGE_REJECTED)
            detail = f"not delivered: {_expired(reply_to)} after {last.attempts} attempt(s)"
            return self._not_failed_fast(rejected, context, f"{detail}; last: {last.reason}")
        delivered = outcome_of(result, target, OUTCOME_BY_KIND[result.classification.kind])
        outcome = dataclasses.replace(
            delivered,
            outcome=Outcome.FAILED_FAST,
            reason=f"{rejected.reason}: {rejected.detail}",
            code=rejected.reason,
        )
        self.outcomes.write(
            structured_log.ERROR,
            outcome,
            context,
            replay=True,
            callback_outcome=delivered.outcome,
            callback_reason=delivered.reason,
        )
        return outcome

    def _not_failed_fast(
        self, rejected: MessageRejected, context: LogContext, why: str
    ) -> RelayOutcome:
        context = context.with_fields(fail_fast=why)
        return self.outcomes.rejected(Outcome.MESSAGE_REJECTED, rejected, context)

    def _expires_in(self, expires_at: datetime.datetime | None) -> float | None:
        """Seconds left until ``expires_at`` (None: never)."""
        if expires_at is None:
            return None
        return (expires_at - self.now()).total_seconds()

    def _relay_message(
        self, message: CallbackMessage, key: str, context: LogContext
    ) -> RelayOutcome:
        try:
            target = self.policy.check(message.callback_url)
        except CallbackUrlRefused as exc:
            return self.outcomes.rejected(Outcome.URL_REFUSED, exc, context)
        expires_in = self._expires_in(message.expires_at)
        if expires_in is not None and expires_in <= 0:
            outcome = RelayOutcome(Outcome.EXPIRED, _expired(message), target=target)
            self.outcomes.write(structured_log.WARNING, outcome, context, replay=True)
            return outcome
        try:
            result = self.client.deliver(message.method, target.url, message.body, key, expires_in)
        except DeliveryDeferred as exc:
            outcome = outcome_of(exc.result, target, Outcome.REDELIVERY_REQUESTED)
            self.outcomes.write(structured_log.WARNING, outcome, context)
            raise RedeliveryRequested(
                f"callback for {target.workflow_name} not delivered: {outcome.reason}"
            ) from None
        except DeliveryExpired as exc:
            # Retried until expires_at: final, as for a message that arrived late.
            last = outcome_of(exc.result, target, Outcome.EXPIRED)
            retried = f"{_expired(message)} after {last.attempts} attempt(s)"
            outcome = dataclasses.replace(last, reason=f"{retried}; last: {last.reason}")
            self.outcomes.write(structured_log.WARNING, outcome, context, replay=True)
            return outcome
        name = OUTCOME_BY_KIND[result.classification.kind]
        outcome = outcome_of(result, target, name)
        self.outcomes.write(SEVERITY[name], outcome, context, replay=name in _REPLAYED)
        return outcome

    # -- helpers ---------------------------------------------------------------

    def _context(
        self,
        message_id: str,
        trace: TraceContext,
        source: str | None,
        replay: Callable[[], dict[str, Any]],
        replay_summary: Callable[[], dict[str, Any]] | None = None,
    ) -> LogContext:
        project = self.settings.trace_project or project_from_source(source)
        return LogContext(message_id, trace.fields(project), replay, replay_summary or replay)

    def _internal_error(self, exc: Exception, context: LogContext) -> RedeliveryRequested:
        """Log a bug once, with the replay record, and keep the message."""
        where = "".join(traceback.format_exception(exc, limit=-3))[-4000:]
        outcome = RelayOutcome(
            Outcome.INTERNAL_ERROR, f"{type(exc).__name__}: {clip(str(exc), 500)}"
        )
        self.outcomes.write(structured_log.ERROR, outcome, context, replay=True, traceback=where)
        return RedeliveryRequested(
            f"internal error ({type(exc).__name__}); the message is kept for redelivery",
            Outcome.INTERNAL_ERROR,
        )


def _base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _expired(message: CallbackMessage | ReplyTo) -> str:
    when = message.expires_at
    return f"expired at {when.isoformat()}" if when is not None else "expired"


def invalid_message_body(rejected: MessageRejected, key: str) -> bytes:
    """The error a waiting step receives; the subworkflow raises it as CallbackError.

    ``details.message_id`` is the message's Idempotency-Key (the Pub/Sub message
    id, or its sha256- digest when the id is not a short visible-ASCII token).
    """
    error = {
        "code": FAIL_FAST_ERROR_CODE,
        "message": f"the relay rejected the message: {rejected.reason}: {rejected.detail}",
        "details": {"reason": rejected.reason.value, "message_id": key},
    }
    # Reasons and details are ASCII (field names are quoted with ascii()).
    return json.dumps({"error": error}, separators=(",", ":")).encode("ascii")


def create_relay(env: Mapping[str, str] | None = None) -> CallbackRelay:
    """Build the process-wide relay from the environment; raises ConfigError early."""
    settings = load_settings(os.environ if env is None else env)
    log = structured_log.StructuredLog(settings.log_level)
    session = build_session(settings.http_pool_size, settings.ca_bundle)
    client = CallbackClient(
        session=session,
        tokens=AccessTokenProvider(session=session, log=log),
        deadline_seconds=settings.retry_deadline_seconds,
        connect_timeout_seconds=settings.connect_timeout_seconds,
        read_timeout_seconds=settings.read_timeout_seconds,
    )
    policy = CallbackUrlPolicy(settings.emulator_origin, settings.allowed_workflows)
    keyed = None
    if settings.keyed is not None:  # the store is imported only when keyed waits are on
        from callback_relay.keyed_waits import build_keyed_waits

        keyed = build_keyed_waits(settings, session, client, policy, OutcomeLog(log))
    return CallbackRelay(settings, policy, client, log, keyed=keyed)
