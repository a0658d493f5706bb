"""Bounded waits that say what they waited for and what they saw last.

Every wait in otelgate goes through :func:`poll_until`. A timeout raises :class:`WaitTimeout`, whose message names
the condition, the deadline and the last observation (or the last error), so a red test explains itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A bounded wait ran out. Subclasses AssertionError so pytest reports it as a failed check."""

    def __init__(self, what: str, timeout: float, last: object, last_error: BaseException | None) -> None:
        self.what = what
        self.timeout = timeout
        self.last = last
        self.last_error = last_error
        seen = f"last error: {last_error!r}" if last_error is not None else f"last seen: {_short(last)}"
        super().__init__(f"timed out after {timeout:.1f}s waiting for {what}; {seen}")


def _short(value: object, limit: int = 2000) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more chars)"


def poll_until(
    observe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout: float,
    interval: float = 0.2,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Call ``observe`` until ``done(observation)`` holds, at most ``timeout`` seconds; return the observation.

    Exceptions of the ``retry_on`` types raised by ``observe`` are remembered and retried; the last one is reported
    if the wait times out.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    last_error: BaseException | None = None
    while True:
        try:
            value = observe()
        except retry_on as exc:
            last_error = exc
        else:
            last, last_error = value, None
            if done(value):
                return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, last, last_error)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def wait_stable(
    observe: Callable[[], T],
    *,
    what: str,
    timeout: float,
    quiet: float = 1.0,
    interval: float = 0.2,
    ready: Callable[[T], bool] = lambda _value: True,
) -> T:
    """Wait until ``observe()`` returns the same value for ``quiet`` seconds and ``ready(value)`` holds.

    Used to decide that a trace is complete (span count stable) rather than sleeping a fixed time.
    """
    state: dict[str, object] = {"value": object(), "since": time.monotonic()}

    def settled(value: T) -> bool:
        now = time.monotonic()
        if value != state["value"]:
            state["value"], state["since"] = value, now
            return False
        return ready(value) and now - float(state["since"]) >= quiet  # type: ignore[arg-type]

    return poll_until(observe, settled, what=what, timeout=timeout, interval=interval)
