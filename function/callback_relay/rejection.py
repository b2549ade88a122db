"""The one shape of every permanent refusal: acknowledged, logged, never retried."""

from __future__ import annotations


class Rejection(ValueError):
    """Input the relay can never act on. ``reason`` is a stable code; ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
