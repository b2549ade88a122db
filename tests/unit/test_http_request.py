from __future__ import annotations

import pytest

from callback_relay.http_request import status_for
from callback_relay.outcome_log import RelayOutcome
from callback_relay.outcomes import Outcome, Reason


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_has_a_documented_status(outcome: Outcome) -> None:
    assert status_for(RelayOutcome(outcome, "why")) in {200, 202, 400, 403, 413, 422, 502, 503}


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (Reason.TOO_LARGE, 413),
        (Reason.INVALID_JSON, 400),
        (Reason.NOT_UTF8, 400),
        (Reason.EMPTY, 400),
        (Reason.NOT_AN_OBJECT, 400),
        (Reason.UNKNOWN_FIELD, 422),
        (Reason.NOT_STRICT_JSON, 422),
    ],
)
def test_rejected_messages_map_by_reason(code: Reason, status: int) -> None:
    assert status_for(RelayOutcome(Outcome.MESSAGE_REJECTED, "why", code)) == status
