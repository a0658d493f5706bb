"""The one failure type of otelgate's assertions: it names a cause and carries the evidence, so negative controls
can check *why* a suite failed (cause AND evidence), not only that it did."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rejection:
    """One refusal recorded by the (fake) Dynatrace backend."""

    signal: str
    http_status: int
    reason: str
    message: str
    name: str | None = None   # the metric a per-item refusal names (None: the whole request was refused)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Rejection:
        """From a rejection record of the sink's ``/api/rejections``."""
        name = record.get("name")
        return cls(str(record.get("signal")), int(record.get("http_status") or 0), str(record.get("reason")),
                   str(record.get("message") or "")[:300], None if name is None else str(name))

    def __str__(self) -> str:
        return f"{self.signal}: HTTP {self.http_status} {self.reason}: {self.message}"


@dataclass(frozen=True)
class Evidence:
    """What a failing check observed, in fields a program can match (negative controls do).

    ``hop`` names the part of the path that broke (e.g. ``"collector -> sink"``, ``"kong-otel -> coupon"``);
    ``collector_reachable`` is None when not probed; ``expected``/``seen`` are counts of what the check waited for;
    ``facts`` holds the check-specific observations (e.g. ``{"kong_decision": "not sampled"}``).
    """

    rejections: tuple[Rejection, ...] = ()
    hop: str | None = None
    collector_reachable: bool | None = None
    expected: int | None = None
    seen: int | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        lines: list[str] = []
        if self.hop is not None:
            lines.append(f"hop broken: {self.hop}")
        if self.collector_reachable is not None:
            lines.append(f"collector reachable: {'yes' if self.collector_reachable else 'NO'}")
        if self.expected is not None or self.seen is not None:
            lines.append(f"expected {self.expected}, seen {self.seen}")
        lines += [f"rejected {r}" for r in self.rejections[:5]]
        if len(self.rejections) > 5:
            lines.append(f"... and {len(self.rejections) - 5} more rejection(s)")
        lines += [f"{key}: {value}" for key, value in self.facts.items()]
        return "\n".join(f"  evidence: {line}" for line in lines)

    def summary(self) -> str:
        """One line: the same observations, each refusal reason once (for tables such as the control matrix)."""
        parts: list[str] = []
        if self.hop is not None:
            parts.append(f"hop {self.hop}")
        if self.collector_reachable is not None:
            parts.append(f"collector {'reachable' if self.collector_reachable else 'UNREACHABLE'}")
        if self.expected is not None or self.seen is not None:
            parts.append(f"expected {self.expected}, seen {self.seen}")
        reasons = sorted({f"{r.signal} HTTP {r.http_status} {r.reason}" for r in self.rejections})
        if reasons:
            parts.append("refused: " + ", ".join(reasons))
        parts += [f"{key}={value}" for key, value in self.facts.items()]
        return "; ".join(parts)

    def is_empty(self) -> bool:
        return self == Evidence()


class ExpectationFailed(AssertionError):
    """A claim about the pipeline does not hold.

    ``cause`` is a short stable code (e.g. ``"SINK_REJECTIONS"``); ``details`` is the text a person needs (a trace
    tree, the offending points or log lines); ``evidence`` is the same observation in matchable fields.
    """

    def __init__(self, cause: str, message: str, details: str = "", evidence: Evidence | None = None) -> None:
        self.cause = cause
        self.message = message
        self.details = details
        self.evidence = evidence if evidence is not None else Evidence()
        text = f"[{cause}] {message}"
        if not self.evidence.is_empty():
            text += f"\n{self.evidence.describe()}"
        if details:
            text += f"\n{details}"
        super().__init__(text)


class NotEnoughData(ExpectationFailed):
    """A check refused to pass on too little data (every check states the minimum it needs)."""

    def __init__(self, what: str, needed: int, seen: int, details: str = "") -> None:
        super().__init__("NOT_ENOUGH_DATA", f"need at least {needed} {what}, saw {seen}", details,
                         Evidence(expected=needed, seen=seen))


def require(what: str, items: Sequence[object], minimum: int = 1, details: str = "") -> None:
    if len(items) < minimum:
        raise NotEnoughData(what, minimum, len(items), details)
