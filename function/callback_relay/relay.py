"""The relay itself: message in, callback out, one log line per outcome.

Every outcome is final (the caller acknowledges the message) except
``RedeliveryRequested``, raised only for transient failures that outlived the
in-process retries, so that Pub/Sub redelivers the message later.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable, Mapping
from typing import Any

from callback_relay import structured_log
from callback_relay.access_token import AccessTokenProvider
from callback_relay.callback_client import (
    CallbackClient,
    DeliveryDeferred,
    DeliveryResult,
    build_session,
)
from callback_relay.callback_response import Kind
from callback_relay.callback_url_policy import CallbackTarget, CallbackUrlPolicy, CallbackUrlRefused
from callback_relay.config import Settings, load_settings
from callback_relay.message import CallbackMessage, MessageRejected, parse_message_data
from callback_relay.pubsub_event import (
    EventRejected,
    PubSubDelivery,
    delivery_from_event,
    project_from_source,
)

_SEVERITY = {
    Kind.DELIVERED: structured_log.INFO,
    Kind.EXECUTION_GONE: structured_log.WARNING,
    Kind.ALREADY_PENDING: structured_log.WARNING,
    Kind.PERMANENT: structured_log.ERROR,
}


@dataclasses.dataclass(frozen=True)
class RelayOutcome:
    """A final outcome: the message is acknowledged."""

    outcome: str
    reason: str
    http_status: int | None = None
    attempts: int = 0
    latency_ms: float = 0.0
    target: CallbackTarget | None = None


class RedeliveryRequested(RuntimeError):
    """Transient failure: raise it so that Pub/Sub redelivers the message."""


@dataclasses.dataclass(frozen=True)
class LogContext:
    message_id: str
    trace_fields: dict[str, Any]
    replay: Callable[[], dict[str, Any]]


class CallbackRelay:
    def __init__(
        self,
        settings: Settings,
        policy: CallbackUrlPolicy,
        client: CallbackClient,
        log: structured_log.StructuredLog,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.client = client
        self.log = log
        self.now = now

    # -- entry points -----------------------------------------------------

    def relay_cloud_event(
        self, event_id: str | None, source: str | None, data: Any, traceparent: str | None
    ) -> RelayOutcome:
        try:
            delivery = delivery_from_event(event_id, source, data, traceparent)
        except EventRejected as exc:
            context = LogContext(event_id or "", self._trace(traceparent, source), lambda: {})
            return self._rejected("message_rejected", exc.reason, exc.detail, context, exc.replay)
        return self.relay_delivery(delivery)

    def relay_delivery(self, delivery: PubSubDelivery) -> RelayOutcome:
        context = LogContext(
            delivery.message_id,
            self._trace(delivery.traceparent, delivery.source),
            delivery.replay_record,
        )
        try:
            message = parse_message_data(delivery.data, self.settings.max_message_bytes)
        except MessageRejected as exc:
            return self.reject(exc.reason, exc.detail, context)
        return self.relay_message(message, delivery.message_id, context)

    def reject(self, reason: str, detail: str, context: LogContext) -> RelayOutcome:
        """Acknowledge and log a message that breaks the contract."""
        return self._rejected("message_rejected", reason, detail, context)

    def relay_message(
        self, message: CallbackMessage, idempotency_key: str, context: LogContext
    ) -> RelayOutcome:
        try:
            target = self.policy.check(message.callback_url)
        except CallbackUrlRefused as exc:
            return self._rejected("url_refused", exc.reason, exc.detail, context)
        if message.expires_at is not None and self.now() >= message.expires_at:
            outcome = RelayOutcome(
                "expired", f"expired at {message.expires_at.isoformat()}", target=target
            )
            self._log(structured_log.WARNING, outcome, context, replay=True)
            return outcome
        try:
            result = self.client.deliver(message.method, target.url, message.body, idempotency_key)
        except DeliveryDeferred as exc:
            outcome = self._outcome(exc.result, target, "redelivery_requested")
            self._log(structured_log.WARNING, outcome, context)
            raise RedeliveryRequested(
                f"callback for {target.workflow_name} not delivered: {outcome.reason}"
            ) from None
        kind = result.classification.kind
        outcome = self._outcome(result, target, kind.value)
        self._log(_SEVERITY[kind], outcome, context, replay=kind is Kind.PERMANENT)
        return outcome

    # -- helpers ----------------------------------------------------------

    @staticmethod
    def _outcome(result: DeliveryResult, target: CallbackTarget, name: str) -> RelayOutcome:
        c = result.classification
        reason = f"{c.reason}: {c.error_excerpt}" if c.error_excerpt else c.reason
        return RelayOutcome(name, reason, c.status, result.attempts, result.latency_ms, target)

    def _trace(self, traceparent: str | None, source: str | None) -> dict[str, Any]:
        project = self.settings.trace_project or project_from_source(source)
        return structured_log.trace_fields(traceparent, project)

    def _rejected(
        self,
        outcome_name: str,
        reason: str,
        detail: str,
        context: LogContext,
        replay: dict[str, Any] | None = None,
    ) -> RelayOutcome:
        outcome = RelayOutcome(outcome_name, f"{reason}: {detail}")
        self._log(structured_log.ERROR, outcome, context, replay=True, extra_replay=replay)
        return outcome

    def _log(
        self,
        level: int,
        outcome: RelayOutcome,
        context: LogContext,
        replay: bool = False,
        extra_replay: dict[str, Any] | None = None,
    ) -> None:
        if not self.log.enabled(level):
            return
        fields: dict[str, Any] = {
            "outcome": outcome.outcome,
            "reason": outcome.reason,
            "message_id": context.message_id,
            "attempts": outcome.attempts,
            "http_status": outcome.http_status,
            "latency_ms": round(outcome.latency_ms, 2),
            **context.trace_fields,
        }
        if outcome.target is not None:
            t = outcome.target
            fields["target"] = {
                "project": t.project,
                "location": t.location,
                "workflow": t.workflow,
                "execution": t.execution,
                "callback": t.callback,
            }
        if replay:
            fields["replay"] = extra_replay or context.replay()
        self.log.write(level, f"{outcome.outcome}: {outcome.reason}", fields)


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
    return CallbackRelay(settings, policy, client, log)
