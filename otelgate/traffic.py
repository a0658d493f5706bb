"""Client traffic through the gateway: every request bounded by a timeout, every answer recorded with the
X-Kong-Request-Id the gateway gave it (the join key to traces and access logs)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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


def send(
    gateway_url: str,
    path: str,
    count: int = 1,
    *,
    headers_per_request: Sequence[Mapping[str, str]] | None = None,
    timeout: float = 10.0,
) -> Traffic:
    """GET ``path`` ``count`` times, sequentially, each with its own timeout."""
    traffic = Traffic(path=path, started_ns=time.time_ns())
    with httpx.Client(base_url=gateway_url, timeout=httpx.Timeout(timeout)) as client:
        for index in range(count):
            headers = dict(headers_per_request[index]) if headers_per_request else {}
            began = time.perf_counter()
            try:
                response = client.get(path, headers=headers)
            except httpx.HTTPError as exc:
                traffic.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            traffic.latencies_ms.append((time.perf_counter() - began) * 1000)
            traffic.statuses.append(response.status_code)
            traffic.traceparents.append(headers.get("traceparent", ""))
            if REQUEST_ID_HEADER in response.headers:
                traffic.request_ids.append(response.headers[REQUEST_ID_HEADER])
    traffic.ended_ns = time.time_ns()
    return traffic
