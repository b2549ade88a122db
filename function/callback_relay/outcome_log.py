"""What happened to a message, as one log line: the outcome, why, and how to replay it.

Both paths of the relay write through here: the direct resume (``relay.py``) and
keyed waits (``keyed_waits.py``). A line carries the outcome and reason, the
message id, the callback's status and attempts, the target, the trace fields,
and, for a message that was not delivered, the replay record
(``structured_log`` keeps every line within Cloud Logging's entry size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from callback_relay import structured_log
from callback_relay.callback_response import DeliveryResult, Kind
from callback_relay.callback_url_policy import CallbackTarget
from callback_relay.errors import Rejection
from callback_relay.outcomes import Outcome, Reason

# A final answer of the callback, as the outcome it gives the message.
OUTCOME_BY_KIND = {
    Kind.DELIVERED: Outcome.DELIVERED,
    Kind.EXECUTION_GONE: Outcome.EXECUTION_GONE,
    Kind.ALREADY_PENDING: Outcome.ALREADY_PENDING,
    Kind.PERMANENT: Outcome.CALLBACK_REJECTED,
}
SEVERITY = {
    Outcome.DELIVERED: structured_log.INFO,
    Outcome.EXECUTION_GONE: structured_log.WARNING,
    Outcome.ALREADY_PENDING: structured_log.WARNING,
    Outcome.CALLBACK_REJECTED: structured_log.ERROR,
    Outcome.EXPIRED: structured_log.WARNING,
    Outcome.URL_REFUSED: structured_log.ERROR,
    Outcome.REDELIVERY_REQUESTED: structured_log.WARNING,
}


@dataclasses.dataclass(frozen=True)
class RelayOutcome:
    """A final outcome: the message is acknowledged."""

    outcome: Outcome
    reason: str
    code: Reason | None = None
    http_status: int | None = None
    attempts: int = 0
    latency_ms: float = 0.0
    target: CallbackTarget | None = None


@dataclasses.dataclass(frozen=True)
class LogContext:
    """What every line about one message carries."""

    message_id: str
    trace_fields: dict[str, Any]
    replay: Callable[[], dict[str, Any]]
    replay_summary: Callable[[], dict[str, Any]]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def with_fields(self, **fields: Any) -> LogContext:
        return dataclasses.replace(self, extra={**self.extra, **fields})


def outcome_of(result: DeliveryResult, target: CallbackTarget, name: Outcome) -> RelayOutcome:
    """The outcome ``name`` of a delivery, with the callback's last answer as its reason."""
    c = result.classification
    reason = f"{c.reason}: {c.error_excerpt}" if c.error_excerpt else c.reason
    return RelayOutcome(name, reason, None, c.status, result.attempts, result.latency_ms, target)


class OutcomeLog:
    def __init__(self, log: structured_log.StructuredLog) -> None:
        self.log = log

    def rejected(self, name: Outcome, exc: Rejection, context: LogContext) -> RelayOutcome:
        """A refusal: final, logged as an error with the replay record."""
        outcome = RelayOutcome(name, f"{exc.reason}: {exc.detail}", exc.reason)
        self.write(structured_log.ERROR, outcome, context, replay=True)
        return outcome

    def write(
        self,
        level: int,
        outcome: RelayOutcome,
        context: LogContext,
        replay: bool = False,
        **extra: Any,
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
            **context.extra,
            **extra,
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
            fields["replay"] = context.replay()
        self.log.write(
            level, f"{outcome.outcome}: {outcome.reason}", fields, context.replay_summary
        )
