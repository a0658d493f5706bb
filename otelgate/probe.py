"""Live evidence about a running stack for the claims: is the collector reachable, what did the sink refuse since a
moment, and what does the collector's own telemetry say about its exporters.

Everything here is bounded (short HTTP timeouts) and returns None for "could not tell" instead of guessing: a
stack that does not publish the collector's URLs (see :func:`collector_url`) yields no collector evidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from otelgate import promtext
from otelgate.expect.errors import Rejection
from otelgate.stacks.base import URL_COLLECTOR_HEALTH, URL_COLLECTOR_METRICS, Stack

HEALTH_URL_KEY = URL_COLLECTOR_HEALTH
TELEMETRY_URL_KEY = URL_COLLECTOR_METRICS
SEND_FAILED_PREFIX = "otelcol_exporter_send_failed_"


def collector_url(stack: Stack, key: str) -> str | None:
    """The collector URL the stack publishes under ``key`` in ``stack.urls()`` (None when it publishes none)."""
    urls = getattr(stack, "urls", None)
    if not callable(urls):
        return None
    try:
        published = urls()
    except Exception:  # a stack mid-reconfiguration may not know its URLs
        return None
    value = published.get(key) if isinstance(published, Mapping) else None
    return str(value) if value else None


def collector_reachable(stack: Stack, timeout: float = 1.0) -> bool | None:
    """True if the collector's health endpoint answers, False if nothing listens there, None if unknown."""
    url = collector_url(stack, HEALTH_URL_KEY)
    if url is None:
        return None
    try:
        httpx.get(url, timeout=timeout)
    except httpx.ConnectError:
        return False
    except httpx.HTTPError:
        return None  # something listens but did not answer in time: not evidence of "down"
    return True


def exporter_send_failures(stack: Stack, exporter: str = "otlp_http/dynatrace",
                           timeout: float = 1.0) -> dict[str, float] | None:
    """``otelcol_exporter_send_failed_*`` of ``exporter`` from the collector's own metrics (None if unavailable)."""
    url = collector_url(stack, TELEMETRY_URL_KEY)
    if url is None:
        return None
    try:
        text = httpx.get(url, timeout=timeout).text
    except httpx.HTTPError:
        return None
    try:
        samples = promtext.samples(text)
    except ValueError:
        return None
    failures: dict[str, float] = {}
    for sample in samples:
        if sample.name.startswith(SEND_FAILED_PREFIX) and sample.labels.get("exporter") == exporter:
            name = sample.name.removeprefix(SEND_FAILED_PREFIX).removesuffix("_total")
            failures[name] = failures.get(name, 0.0) + float(sample.value)
    return failures


def rejections_since(stack: Stack, after_ns: int, signal: str | None = None) -> list[Rejection]:
    """The sink's refusals recorded at or after ``after_ns`` (of ``signal``, or all)."""
    return [Rejection.from_record(r) for r in _records_since(stack.sink.rejections(), after_ns)
            if signal is None or r.get("signal") in (signal, None)]


def _records_since(records: Sequence[Mapping[str, Any]], after_ns: int) -> list[Mapping[str, Any]]:
    return [r for r in records if float(r.get("at", 0)) * 1e9 >= after_ns]
