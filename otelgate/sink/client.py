"""``SinkClient``: typed access to the sink's JSON API and bounded waits on what it received."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx

from otelgate.waiting import poll_until

T = TypeVar("T")
Record = dict[str, Any]


class SinkApiError(RuntimeError):
    """The sink answered an API call with an error status."""


def _query(filters: Mapping[str, Any]) -> dict[str, str]:
    """Filters as query parameters; ``attrs={"k": "v"}`` (or ``**{"attr.k": "v"}``) filter on attributes."""
    params: dict[str, str] = {}
    for key, value in filters.items():
        if value is None:
            continue
        if key == "attrs":
            params.update({f"attr.{k}": _text(v) for k, v in dict(value).items()})
        else:
            params[key] = _text(value)
    return params


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SinkClient:
    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def __repr__(self) -> str:
        return f"SinkClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SinkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise SinkApiError(f"{method} {self.base_url}{path}: no answer within {self.timeout}s ({exc!r})") from exc
        if response.status_code >= 400:
            raise SinkApiError(f"{method} {self.base_url}{path} -> HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    # ------------------------------------------------------------------ queries

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/healthz"))

    def spans(self, **filters: Any) -> list[Record]:
        """Filters: ``trace_id``, ``service``, ``name``, ``attrs={key: value}``."""
        return list(self._call("GET", "/api/spans", params=_query(filters)))

    def trace(self, trace_id: str) -> list[Record]:
        """The spans of one trace, ordered by start time ([] when unknown)."""
        return list(self._call("GET", f"/api/traces/{trace_id.lower()}")["spans"])

    def traces(self) -> list[Record]:
        """One summary per trace: trace_id, span_count, services, root_name, root_service, start/end."""
        return list(self._call("GET", "/api/traces"))

    def metric_points(self, name: str | None = None, **filters: Any) -> list[Record]:
        return list(self._call("GET", "/api/metrics", params=_query({"name": name, **filters})))

    def logs(self, **filters: Any) -> list[Record]:
        """Filters: ``trace_id`` (the OTLP field or the attribute Dynatrace links by), ``attrs={key: value}``."""
        return list(self._call("GET", "/api/logs", params=_query(filters)))

    def rejections(self, signal: str | None = None) -> list[Record]:
        return list(self._call("GET", "/api/rejections", params=_query({"signal": signal})))

    def stats(self) -> dict[str, dict[str, int]]:
        return dict(self._call("GET", "/api/stats"))

    def process(self) -> dict[str, Any]:
        """The sink's own CPU seconds and RSS (main process and decode workers), see ``GET /api/process``."""
        return dict(self._call("GET", "/api/process"))

    def reset(self) -> None:
        self._call("POST", "/api/reset")

    def dump(self) -> dict[str, Any]:
        return dict(self._call("GET", "/api/dump"))

    def load(self, dump: Mapping[str, Any]) -> None:
        self._call("POST", "/api/load", json=dict(dump))

    def inject_fault(self, status: int | None = 503, count: int | None = 1, retry_after: float | None = None,
                     latency_ms: float = 0, signals: list[str] | None = None) -> list[Record]:
        """Answer the next ``count`` ingest requests (None = until cleared) with ``status`` and/or a delay."""
        body: dict[str, Any] = {"status": status, "count": count, "latency_ms": latency_ms}
        if retry_after is not None:
            body["retry_after"] = retry_after
        if signals is not None:
            body["signals"] = list(signals)
        return list(self._call("POST", "/api/faults", json=body)["faults"])

    def clear_faults(self) -> None:
        self._call("DELETE", "/api/faults")

    # ------------------------------------------------------------------ waits

    def wait_until(self, observe: Callable[[], T], done: Callable[[T], bool], *, what: str,
                   timeout: float = 10.0, interval: float = 0.2) -> T:
        """Poll ``observe`` until ``done``; on timeout raise WaitTimeout showing the last state seen."""
        return poll_until(observe, done, what=what, timeout=timeout, interval=interval,
                          retry_on=(httpx.HTTPError, SinkApiError))

    def wait_for_spans(self, min_count: int = 1, timeout: float = 10.0, **filters: Any) -> list[Record]:
        return self.wait_until(lambda: self.spans(**filters), lambda spans: len(spans) >= min_count,
                               what=f"at least {min_count} span(s) matching {_query(filters) or 'anything'} "
                                    f"in the sink at {self.base_url}",
                               timeout=timeout)

    def wait_for_trace(self, trace_id: str, min_spans: int = 1, timeout: float = 10.0) -> list[Record]:
        return self.wait_until(lambda: self.trace(trace_id), lambda spans: len(spans) >= min_spans,
                               what=f"trace {trace_id} with at least {min_spans} span(s) in the sink", timeout=timeout)

    def wait_for_logs(self, min_count: int = 1, timeout: float = 10.0, **filters: Any) -> list[Record]:
        return self.wait_until(lambda: self.logs(**filters), lambda records: len(records) >= min_count,
                               what=f"at least {min_count} log record(s) matching {_query(filters) or 'anything'}",
                               timeout=timeout)

    def wait_for_metric(self, name: str, min_points: int = 1, timeout: float = 10.0) -> list[Record]:
        return self.wait_until(lambda: self.metric_points(name), lambda points: len(points) >= min_points,
                               what=f"at least {min_points} point(s) of metric {name!r} (rejections are in "
                                    f"{self.base_url}/api/rejections?signal=metrics)",
                               timeout=timeout)

    def wait_for_rejections(self, signal: str | None = None, min_count: int = 1,
                            timeout: float = 10.0) -> list[Record]:
        return self.wait_until(lambda: self.rejections(signal), lambda found: len(found) >= min_count,
                               what=f"at least {min_count} rejection(s) for {signal or 'any signal'}", timeout=timeout)
