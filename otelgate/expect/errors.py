"""The one failure type of otelgate's assertions: it names a cause, so negative controls can check *why* a suite
failed, not only that it did."""

from __future__ import annotations

from collections.abc import Sequence


class ExpectationFailed(AssertionError):
    """A claim about the pipeline does not hold.

    ``cause`` is a short stable code (e.g. ``"CUMULATIVE_POINTS"``); ``details`` is the evidence a person needs
    (a trace tree, the offending points or log lines).
    """

    def __init__(self, cause: str, message: str, details: str = "") -> None:
        self.cause = cause
        self.message = message
        self.details = details
        text = f"[{cause}] {message}"
        if details:
            text += f"\n{details}"
        super().__init__(text)


class NotEnoughData(ExpectationFailed):
    """A check refused to pass on too little data (every check states the minimum it needs)."""

    def __init__(self, what: str, needed: int, seen: int, details: str = "") -> None:
        super().__init__("NOT_ENOUGH_DATA", f"need at least {needed} {what}, saw {seen}", details)


def require(what: str, items: Sequence[object], minimum: int = 1, details: str = "") -> None:
    if len(items) < minimum:
        raise NotEnoughData(what, minimum, len(items), details)
