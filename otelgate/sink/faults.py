"""Fault injection: answer the next N ingest requests with a chosen status (and ``Retry-After``), or slow them down.

Used to drive the collector's retry path (429/502/503/504 are retryable, everything else is not).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from otelgate.otlp import SIGNALS


class InvalidFault(ValueError):
    pass


@dataclass
class Fault:
    status: int | None = None  # None = latency only
    count: int | None = None  # None = until cleared
    retry_after: float | None = None
    latency_ms: float = 0.0
    signals: tuple[str, ...] = SIGNALS
    used: int = 0

    @classmethod
    def from_json(cls, document: Any) -> Fault:
        if not isinstance(document, Mapping):
            raise InvalidFault("a fault is a JSON object like {\"status\": 503, \"count\": 2}")
        unknown = set(document) - {"status", "count", "retry_after", "latency_ms", "signals"}
        if unknown:
            raise InvalidFault(f"unknown fault fields: {', '.join(sorted(unknown))}")
        status = document.get("status")
        if status is not None and (not isinstance(status, int) or isinstance(status, bool)
                                   or not 400 <= status <= 599):
            raise InvalidFault(f"status must be an HTTP error code 400-599, got {status!r}")
        count = document.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise InvalidFault(f"count must be a positive integer, got {count!r}")
        retry_after = document.get("retry_after")
        if retry_after is not None and (not isinstance(retry_after, int | float) or retry_after < 0):
            raise InvalidFault(f"retry_after must be a number of seconds >= 0, got {retry_after!r}")
        latency = document.get("latency_ms", 0) or 0
        if not isinstance(latency, int | float) or not 0 <= latency <= 120_000:
            raise InvalidFault(f"latency_ms must be a number between 0 and 120000, got {latency!r}")
        signals = document.get("signals") or list(SIGNALS)
        if not isinstance(signals, list) or any(s not in SIGNALS for s in signals):
            raise InvalidFault(f"signals must be a list drawn from {list(SIGNALS)}, got {signals!r}")
        if status is None and not latency:
            raise InvalidFault("a fault needs a status, a latency_ms, or both")
        return cls(status, count, retry_after, float(latency), tuple(signals))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["signals"] = list(self.signals)
        data["remaining"] = None if self.count is None else self.count - self.used
        return data


class Faults:
    """Active faults, first match wins; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, signal: str) -> Fault | None:
        """The fault that applies to this request (used up by it), if any."""
        with self._lock:
            for fault in self._faults:
                if signal in fault.signals:
                    fault.used += 1
                    if fault.count is not None and fault.used >= fault.count:
                        self._faults.remove(fault)
                    return fault
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self._faults]
