"""Every exception the relay raises, in one place.

Only ``RedeliveryRequested`` may leave an entry point: it makes Pub/Sub
redeliver the message. Every ``Rejection`` is final: the message is
acknowledged and logged with what is needed to replay it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callback_relay.outcomes import Outcome, Reason

if TYPE_CHECKING:
    from callback_relay.callback_response import DeliveryResult


class Rejection(ValueError):
    """Input the relay can never act on. ``reason`` is a stable code; ``detail`` says why."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class MessageRejected(Rejection):
    """The message breaks the contract."""


class EventRejected(Rejection):
    """The event holds no usable Pub/Sub message; ``replay`` holds what is left of it."""

    def __init__(self, reason: Reason, detail: str, replay: dict[str, Any] | None = None) -> None:
        super().__init__(reason, detail)
        self.replay = replay or {}


class CallbackUrlRefused(Rejection):
    """The URL is not a callback this relay may send its token to."""


class ConfigError(ValueError):
    """An environment variable holds a value the relay cannot run with."""


class TokenUnavailable(RuntimeError):
    """No token could be obtained now; the caller should retry later."""


class DeliveryDeferred(RuntimeError):
    """Transient failures lasted past the deadline; Pub/Sub should redeliver."""

    def __init__(self, result: DeliveryResult) -> None:
        super().__init__(result.classification.reason)
        self.result = result


class DeliveryExpired(RuntimeError):
    """The message's ``expires_at`` came before a final answer; no attempt starts after it."""

    def __init__(self, result: DeliveryResult) -> None:
        super().__init__(result.classification.reason)
        self.result = result


class RedeliveryRequested(RuntimeError):
    """The one exception an entry point raises: Pub/Sub redelivers the message.

    ``outcome`` says why: a transient failure (``redelivery_requested``) or a bug
    in the relay (``internal_error``), whose message is kept for a replay.
    """

    def __init__(self, message: str, outcome: Outcome = Outcome.REDELIVERY_REQUESTED) -> None:
        super().__init__(message)
        self.outcome = outcome
