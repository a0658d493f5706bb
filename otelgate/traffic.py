"""Client traffic through the gateway: every request bounded by a timeout, every answer recorded with the
X-Kong-Request-Id the gateway gave it (the join key to traces and access logs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import httpx

REQUEST_ID_HEADER = "x-kong-request-id"


@dataclass
class Traffic:
    """What the client sent and saw."""

    path: str
    started_ns: int
    ended_ns: int = 0
    request_ids: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    traceparents: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.statuses) + len(self.errors)

    def describe(self) -> str:
        codes = sorted(set(self.statuses))
        return (f"{self.sent} x GET {self.path}: statuses {codes}, {len(self.errors)} error(s)"
                + (f", first error: {self.errors[0]}" if self.errors else ""))


class Journal(Protocol):
    """Records the client-side facts of a run (clock readings, traffic), or plays them back on a replay."""

    def clock(self, read: Callable[[], int]) -> int: ...

    def traffic(self, path: str, count: int, perform: Callable[[], Traffic]) -> Traffic: ...


# Installed by otelgate.reports.journal (recording during pytest runs, playback under `otelgate replay`).
journal: Journal | None = None


def now_ns() -> int:
    """The wall clock as the claims read it: journaled, so a replay sees the same readings."""
    return journal.clock(time.time_ns) if journal is not None else time.time_ns()


def checkpoint() -> None:
    """Mark "now" in the journal: a replay shows the sink only what had arrived by this point."""
    now_ns()


def send(
    gateway_url: str,
    path: str,
    count: int = 1,
    *,
    headers_per_request: Sequence[Mapping[str, str]] | None = None,
    timeout: float = 10.0,
    concurrency: int = 1,
) -> Traffic:
    """GET ``path`` ``count`` times, each with its own timeout; ``concurrency`` requests in flight at once (the
    answers are recorded in request order either way)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if journal is not None:
        return journal.traffic(path, count, lambda: _send(gateway_url, path, count, headers_per_request, timeout,
                                                          concurrency))
    return _send(gateway_url, path, count, headers_per_request, timeout, concurrency)


@dataclass(frozen=True)
class _Answer:
    status: int | None = None
    error: str | None = None
    latency_ms: float = 0.0
    traceparent: str = ""
    request_id: str | None = None


def _one(client: httpx.Client, path: str, headers: dict[str, str]) -> _Answer:
    began = time.perf_counter()
    try:
        response = client.get(path, headers=headers)
    except httpx.HTTPError as exc:
        return _Answer(error=f"{type(exc).__name__}: {exc}")
    return _Answer(response.status_code, None, (time.perf_counter() - began) * 1000, headers.get("traceparent", ""),
                   response.headers.get(REQUEST_ID_HEADER))


def _send(gateway_url: str, path: str, count: int, headers_per_request: Sequence[Mapping[str, str]] | None,
          timeout: float, concurrency: int = 1) -> Traffic:
    traffic = Traffic(path=path, started_ns=time.time_ns())
    headers = [dict(headers_per_request[index]) if headers_per_request else {} for index in range(count)]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=gateway_url, timeout=httpx.Timeout(timeout), limits=limits) as client:
        if concurrency == 1:
            answers = [_one(client, path, h) for h in headers]
        else:
            with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="otelgate-traffic") as pool:
                answers = list(pool.map(lambda h: _one(client, path, h), headers))
    for answer in answers:
        if answer.error is not None:
            traffic.errors.append(answer.error)
            continue
        assert answer.status is not None
        traffic.latencies_ms.append(answer.latency_ms)
        traffic.statuses.append(answer.status)
        traffic.traceparents.append(answer.traceparent)
        if answer.request_id is not None:
            traffic.request_ids.append(answer.request_id)
    traffic.ended_ns = time.time_ns()
    return traffic
