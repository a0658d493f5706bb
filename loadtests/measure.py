"""What the sweep measures besides locust: the collector's CPU and memory while the load runs (a process by pid, or
its own metrics endpoint), its self-metric counters before and after, and the sink's side (counts, refusals, the
Kong root spans to join with the client's request ids)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from otelgate import promtext
from otelgate.claims import timing_of
from otelgate.reports import sampling as report
from otelgate.stacks.base import URL_COLLECTOR_METRICS, Stack
from otelgate.waiting import WaitTimeout, wait_stable

KONG_ROOT_SPAN = "kong"
REQUEST_ID_ATTRIBUTE = "kong.request.id"
# collector self-metrics that count telemetry the collector failed to pass on (names without the _total suffix)
COLLECTOR_FAILURE = re.compile(r"^otelcol_(exporter_send_failed|exporter_enqueue_failed|processor_dropped|"
                               r"processor_refused|receiver_refused|receiver_failed)_\w+$")
COLLECTOR_SENT = re.compile(r"^otelcol_(exporter_sent|receiver_accepted)_(spans|log_records|metric_points)$")


class ResourceProbe(Protocol):
    """One sample of the collector's (CPU percent of one core, resident bytes), or None when unavailable."""

    source: str

    def sample(self) -> tuple[float, float] | None: ...


class PsutilProbe:
    """The local collector process (and any children) by pid."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.source = f"psutil, pid {pid}"
        self._process = psutil.Process(pid)
        self._tracked: dict[int, Any] = {}
        self._procs()  # the first cpu_percent() call of each process only sets its baseline

    def _procs(self) -> list[Any]:
        import psutil

        procs = [self._process]
        with contextlib.suppress(psutil.Error):
            procs += self._process.children(recursive=True)
        current = []
        for proc in procs:
            if proc.pid not in self._tracked:
                self._tracked[proc.pid] = proc
                with contextlib.suppress(psutil.Error):
                    proc.cpu_percent(None)  # baseline only: the next call measures from here
            current.append(self._tracked[proc.pid])
        return current

    def sample(self) -> tuple[float, float] | None:
        import psutil

        cpu = rss = 0.0
        try:
            for proc in self._procs():
                with contextlib.suppress(psutil.NoSuchProcess):
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
        except psutil.Error:
            return None
        return cpu, rss


class SelfMetricsProbe:
    """A collector anywhere (e.g. in a cluster, port-forwarded): ``otelcol_process_cpu_seconds`` and
    ``otelcol_process_memory_rss[_bytes]`` from its own metrics endpoint."""

    def __init__(self, url: str) -> None:
        self.source = f"collector self-metrics {url}"
        self.url = url
        self._last: tuple[float, float] | None = None

    def sample(self) -> tuple[float, float] | None:
        try:
            metrics = scrape_metrics(self.url)
        except (httpx.HTTPError, ValueError):
            return None
        now, cpu_seconds = time.monotonic(), metrics.get("otelcol_process_cpu_seconds")
        # the Prometheus reader adds the unit suffix in newer collectors (``_bytes``); older ones do not
        rss = metrics.get("otelcol_process_memory_rss_bytes", metrics.get("otelcol_process_memory_rss"))
        if cpu_seconds is None or rss is None:
            return None
        last, self._last = self._last, (now, cpu_seconds)
        if last is None or now <= last[0]:
            return None
        return 100.0 * (cpu_seconds - last[1]) / (now - last[0]), rss


class SinkProbe:
    """The sink's own CPU (its event loop's process, percent of one core) and RSS (with its decode workers), from
    ``GET /api/process`` — the same on every stack, since every stack's sink is otelgate's."""

    def __init__(self, sink: Any) -> None:
        self.source = f"sink GET {sink.base_url}/api/process"
        self._sink = sink
        self._last: tuple[float, float] | None = None

    def sample(self) -> tuple[float, float] | None:
        usage = self._sink.process()
        now, cpu_seconds = float(usage["monotonic"]), float(usage["cpu_seconds"])
        last, self._last = self._last, (now, cpu_seconds)
        if last is None or now <= last[0]:
            return None
        return (100.0 * (cpu_seconds - last[1]) / (now - last[0]),
                float(usage["rss_bytes"]) + float(usage["workers_rss_bytes"]))


def sink_resource_probe(stack: Stack) -> tuple[SinkProbe | None, str]:
    """A probe of the sink's own CPU and memory, or why there is none (a sink without ``/api/process``)."""
    probe = SinkProbe(stack.sink)
    try:
        probe.sample()  # the baseline; also proves the endpoint answers
    except Exception as exc:  # an older sink image, or the sink is unreachable: say so in the report
        return None, f"the sink does not report its own usage ({type(exc).__name__}: {str(exc)[:200]})"
    return probe, ""


# the sink's event loop serves every request and owns the store: near one full core, it is the bottleneck
SINK_BUSY_PERCENT = 85.0


def sink_limit_note(sink: report.CollectorResources) -> str:
    """A plain sentence when the sink, not the pipeline, limited the rate; "" otherwise."""
    if sink.cpu_avg_percent is None or sink.cpu_max_percent is None:
        return ""
    if sink.cpu_avg_percent < SINK_BUSY_PERCENT and sink.cpu_max_percent < 99.0:
        return ""
    return (f"the SINK limited this rate, not the pipeline: its event loop used {sink.cpu_avg_percent:.0f}% of one "
            f"core on average (max {sink.cpu_max_percent:.0f}%); spans/s and latency here measure the fake "
            "Dynatrace (run the sink with more --workers or on another machine)")


class ResourceSampler:
    """Samples a probe once a second on a thread while the load runs."""

    def __init__(self, probe: ResourceProbe | None, interval: float = 1.0) -> None:
        self.probe = probe
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector-resources", daemon=True)

    def _run(self) -> None:
        assert self.probe is not None
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # one failed sample must not end the sampling
                value = self.probe.sample()
                if value is not None:
                    self.samples.append(value)

    def __enter__(self) -> ResourceSampler:
        if self.probe is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def summary(self, why_not: str) -> report.CollectorResources:
        if self.probe is None:
            return report.CollectorResources(source=f"not measured: {why_not}")
        return report.resources_of(self.samples, self.probe.source)


def resource_probe(stack: Stack) -> tuple[ResourceProbe | None, str]:
    """How to watch the collector's CPU and memory on this stack, or why it cannot be watched: its process by pid
    (``stack.collector_pid()``: local processes, via psutil), else its own metrics endpoint (``stack.urls()``)."""
    pid_of = getattr(stack, "collector_pid", None)
    if callable(pid_of):
        pid = pid_of()
        if pid is not None:
            return PsutilProbe(pid), ""
    url = collector_metrics_url(stack)
    if url:
        return SelfMetricsProbe(url), ""
    return None, f"the {stack.name} stack exposes no collector_pid() and no {URL_COLLECTOR_METRICS!r} URL"


def collector_metrics_url(stack: Stack) -> str | None:
    """The collector's own Prometheus metrics (``service.telemetry``) endpoint, if the stack publishes one."""
    urls = getattr(stack, "urls", None)  # not every Stack publishes URLs (a replayed dump has none)
    return urls().get(URL_COLLECTOR_METRICS) if callable(urls) else None


def scrape_metrics(url: str, timeout: float = 5.0) -> dict[str, float]:
    """``GET url`` -> :func:`otelgate.promtext.totals` (every counter summed over its series, without ``_total``)."""
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return promtext.totals(response.text)


def counter_increase(before: Mapping[str, float], after: Mapping[str, float], pattern: re.Pattern[str]
                     ) -> dict[str, float]:
    """Increase of every counter matching ``pattern`` (a counter that went down was reset: its value counts)."""
    increase: dict[str, float] = {}
    for name, value in after.items():
        if pattern.match(name):
            start = before.get(name, 0.0)
            increase[name] = value - start if value >= start else value
    return increase


# ----------------------------------------------------------------------------------------------- sink side

@dataclass
class SinkView:
    spans: int
    span_bytes: int
    logs: int
    dropped_for_cap: int
    rejected: dict[str, int]


def sink_view(stack: Stack) -> SinkView:
    stats = stack.sink.stats()
    rejected: dict[str, int] = {}
    for rejection in stack.sink.rejections():
        key = f"{rejection.get('signal')}/{rejection.get('reason')}"
        rejected[key] = rejected.get(key, 0) + int(rejection.get("items") or 0)
    return SinkView(spans=int(stats["traces"]["items"]), span_bytes=int(stats["traces"]["bytes"]),
                    logs=int(stats["logs"]["items"]),
                    dropped_for_cap=sum(int(s.get("dropped_for_cap", 0)) for s in stats.values()),
                    rejected=rejected)


def wait_flushed(stack: Stack, expected_logs: int) -> tuple[float, bool, str]:
    """Wait until the sink's span and log counts stop changing and at least one log per answered request arrived
    (the access logs travel the same collector, so the pipeline has drained). Returns (seconds, complete, note)."""
    timing = timing_of(stack)
    started = time.monotonic()

    def counts() -> tuple[int, int, int]:
        stats = stack.sink.stats()
        return int(stats["traces"]["items"]), int(stats["traces"]["requests"]), int(stats["logs"]["items"])

    try:
        wait_stable(counts, what=f"the sink's span and log counts to settle with >= {expected_logs} logs",
                    timeout=2 * timing.signal, quiet=timing.settle, interval=0.5,
                    ready=lambda c: c[2] >= expected_logs)
        return time.monotonic() - started, True, ""
    except WaitTimeout as exc:
        return time.monotonic() - started, False, f"pipeline flush incomplete: {exc}"


def kong_roots_by_request(stack: Stack) -> list[str]:
    """``kong.request.id`` of every Kong root span at the sink (one bulk query with a generous timeout)."""
    from otelgate.sink.client import SinkClient

    with SinkClient(stack.sink.base_url, timeout=60.0) as client:
        spans = client.spans(name=KONG_ROOT_SPAN)
    return [str(s.get("attributes", {}).get(REQUEST_ID_ATTRIBUTE, "")) for s in spans
            if not s.get("parent_span_id")]


def scrape_quietly(url: str | None) -> dict[str, float] | None:
    if url is None:
        return None
    try:
        return scrape_metrics(url)
    except (httpx.HTTPError, ValueError):
        return None
