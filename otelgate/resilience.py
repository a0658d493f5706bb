"""Claim 5: a backend outage loses nothing. With traffic flowing, the sink answers 429 (with ``Retry-After``), then
503, for a bounded outage, then recovers; every trace, Kong metric delta and access log of the requests sent around
the outage must then arrive exactly once, within a bound the claim states.

What the collector does (otlphttp exporter and exporterhelper v0.161.0, the version otelgate builds):
429, 502, 503 and 504 are retryable, every other error status drops the data at once
(exporter/otlphttpexporter/otlp.go:233-235, 264-276); a 429/503 ``Retry-After`` of whole seconds stretches the next
back-off to at least that long (otlp.go:238-254, exporterhelper/internal/retry_sender.go:106-114); senders run queue
-> obsreport -> retry -> timeout (exporterhelper/internal/base_exporter.go:70-106), so
``otelcol_exporter_send_failed_*`` counts only data the retry sender gave up on (or never retried), and a batch that
finds the sending queue full is refused before it and counted in ``otelcol_exporter_enqueue_failed_*``
(internal/queue/queue.go:37 "sending queue is full"). Those two counters tell the two ways of losing data apart.

Metrics and "exactly once": Kong's counters are scraped (cumulative) and ``cumulative_to_delta`` turns each scrape
into a delta when the scrape passes the processor, before the exporter's queue. A failed export neither rolls the
processor's state back nor recomputes anything: a retried batch carries the same windows again, so retries cannot
double-count, and a dropped batch is gone for good -- the next delta starts where the dropped one ended (a gap in
the windows) and the counter never "catches up". So the sum of the deltas over the outage must equal the requests
counted, with contiguous windows: a shortfall (or gap) is loss, an excess (or overlap) is duplication.
"""

from __future__ import annotations

import collections
import itertools
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from otelgate import claims, probe, promtext
from otelgate.expect import metrics as expect_metrics
from otelgate.expect.errors import Evidence, ExpectationFailed, Rejection
from otelgate.stacks.base import Stack
from otelgate.topology import Route
from otelgate.traffic import Traffic, now_ns, send
from otelgate.waiting import WaitTimeout, poll_until

OUTAGE_ENV = "OTELGATE_OUTAGE_SECONDS"
DEFAULT_OUTAGE_SECONDS = 20.0
EXPORTER = "otlp_http/dynatrace"
FAULT_REASON = "FAULT_INJECTED"    # the sink's reason on the refusals it was told to give
FLUSH_SECONDS = 5.0                # batch timeout, Kong's counter sync and a poll, with room to spare
# exporterhelper v0.161.0 defaults (configretry/backoff.go, exporterhelper/internal/queue_sender.go:30-49,
# otlphttpexporter/factory.go): what the exporter does where the manifests say nothing
DEFAULT_POLICY: Mapping[str, Any] = {
    "timeout": "30s",
    "retry_on_failure": {"enabled": True, "initial_interval": "5s", "randomization_factor": 0.5, "multiplier": 1.5,
                         "max_interval": "30s", "max_elapsed_time": "300s"},
    "sending_queue": {"enabled": True, "num_consumers": 10, "queue_size": 1000},
}


# ------------------------------------------------------------------------------------------------ settings

def seconds(value: Any) -> float:
    """A Go duration as the collector config writes it (``200ms``, ``5s``, ``1m30s``) or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {value!r} (expected e.g. 200ms, 5s, 1m30s)")
    scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(number) * scale[unit] for number, unit in parts)


@dataclass(frozen=True)
class ExporterPolicy:
    """The otlp_http exporter's retry, queue and timeout settings in force (manifests + stack settings +
    defaults)."""

    retry_enabled: bool
    max_interval: float
    randomization_factor: float
    max_elapsed_time: float
    queue_enabled: bool
    queue_size: int
    num_consumers: int
    timeout: float
    scrape_interval: float

    def describe(self) -> str:
        retry = (f"retry_on_failure on (max_interval {self.max_interval:g}s, max_elapsed_time "
                 f"{self.max_elapsed_time:g}s)") if self.retry_enabled else "retry_on_failure OFF"
        queue = (f"sending_queue {self.queue_size} requests, {self.num_consumers} consumers"
                 if self.queue_enabled else "sending_queue OFF")
        return f"{retry}; {queue}; timeout {self.timeout:g}s"


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result


def policy_of(config: Mapping[str, Any], settings_override: Mapping[str, Any] | None = None) -> ExporterPolicy:
    """The :data:`EXPORTER`'s policy from a collector ``spec.config`` (plus ``StackSettings.exporter_settings``)."""
    exporter = (config.get("exporters") or {}).get(EXPORTER)
    if not isinstance(exporter, Mapping):
        raise ValueError(f"the collector config has no exporter {EXPORTER!r}")
    effective = _merged(_merged(DEFAULT_POLICY, exporter), settings_override or {})
    retry, queue = effective["retry_on_failure"], effective["sending_queue"]
    scrapes = [seconds(s.get("scrape_interval", "1m"))
               for receiver_id, receiver in (config.get("receivers") or {}).items()
               if receiver_id.split("/")[0] == "prometheus"
               for s in ((receiver or {}).get("config") or {}).get("scrape_configs") or []]
    return ExporterPolicy(
        retry_enabled=bool(retry.get("enabled", True)), max_interval=seconds(retry["max_interval"]),
        randomization_factor=float(retry["randomization_factor"]),
        max_elapsed_time=seconds(retry["max_elapsed_time"]), queue_enabled=bool(queue.get("enabled", True)),
        queue_size=int(queue["queue_size"]), num_consumers=int(queue["num_consumers"]),
        timeout=seconds(effective["timeout"]), scrape_interval=max(scrapes, default=60.0))


def stack_policy(stack: Stack) -> ExporterPolicy:
    from otelgate.collector.config import load_collector_resource, resource_config

    return policy_of(resource_config(load_collector_resource()), stack.settings.exporter_settings)


@dataclass(frozen=True)
class Outage:
    """``seconds`` of refusals: the first ``throttled_share`` of it 429 with ``Retry-After: retry_after`` (what
    Dynatrace answers a tenant over its limits), the rest 503 (an incident)."""

    seconds: float = DEFAULT_OUTAGE_SECONDS
    retry_after: int = 2
    throttled_share: float = 0.5
    slow_ms: float = 0.0    # > 0: a slow backend instead -- every request answered (200) after slow_ms, none refused

    def __post_init__(self) -> None:
        if not self.seconds > 0 or not 0 <= self.throttled_share <= 1 or self.retry_after < 0 or self.slow_ms < 0:
            raise ValueError("an outage needs seconds > 0, 0 <= throttled_share <= 1, retry_after >= 0, "
                             f"slow_ms >= 0: {self}")

    def describe(self) -> str:
        if self.slow_ms:
            return f"{self.seconds:g}s of a slow backend ({self.slow_ms / 1000:g}s per request)"
        return f"{self.seconds:g}s (429 Retry-After {self.retry_after}s, then 503)"

    @classmethod
    def from_env(cls) -> Outage:
        """The outage length from ``$OTELGATE_OUTAGE_SECONDS`` (default 20 s; CI uses a short one)."""
        raw = os.environ.get(OUTAGE_ENV)
        try:
            return cls(float(raw)) if raw else cls()
        except ValueError:
            raise ValueError(f"{OUTAGE_ENV}={raw!r}: expected a number of seconds > 0") from None

    def bound(self, policy: ExporterPolicy) -> float:
        """How long after the outage ends everything must have arrived: one more back-off (at most
        ``max_interval`` randomized by +-``randomization_factor``, at least the ``Retry-After``), the next scrape,
        and a flush. The back-off is cenkalti/backoff's ExponentialBackOff, which randomizes the capped interval
        (exporterhelper/internal/retry_sender.go:74-79,106)."""
        backoff = policy.max_interval * (1 + policy.randomization_factor)
        return max(backoff, self.retry_after) + policy.scrape_interval + FLUSH_SECONDS


# ----------------------------------------------------------------------------------------- collector counters

def collector_counters(stack: Stack, exporter: str = EXPORTER) -> dict[str, float] | None:
    """The exporter's own counters (``sent_spans``, ``send_failed_log_records``, ``enqueue_failed_metric_points``,
    ``queue_size``, ``queue_capacity`` ...; summed over data types, and ``queue_size[traces]`` etc. per signal's
    queue), or None when the stack publishes none."""
    url = probe.collector_url(stack, probe.TELEMETRY_URL_KEY)
    if url is None:
        return None
    import httpx

    try:
        samples = promtext.samples(httpx.get(url, timeout=2.0).text)
    except (httpx.HTTPError, ValueError):
        return None
    counters: dict[str, float] = {}
    for sample in samples:
        if sample.labels.get("exporter") == exporter and sample.name.startswith("otelcol_exporter_"):
            name = sample.name.removeprefix("otelcol_exporter_").removesuffix("_total")
            counters[name] = counters.get(name, 0.0) + float(sample.value)
            if name == "queue_size" and "data_type" in sample.labels:  # one queue per signal
                counters[f"queue_size[{sample.labels['data_type']}]"] = float(sample.value)
    return counters


def counter_increase(before: Mapping[str, float] | None, after: Mapping[str, float] | None,
                     prefix: str) -> dict[str, float]:
    """``{counter: increase}`` for counters starting with ``prefix`` that moved."""
    if before is None or after is None:
        return {}
    return {name: after[name] - before.get(name, 0.0) for name in sorted(after)
            if name.startswith(prefix) and after[name] - before.get(name, 0.0) > 0}


# ------------------------------------------------------------------------------------------------- delivery

@dataclass
class Delivery:
    """What arrived of the outage traffic, per signal: ``expected``, ``arrived`` (distinct), ``duplicates``."""

    expected: dict[str, int] = field(default_factory=dict)
    arrived: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    metric_windows_ok: bool = True
    scraped_after_traffic: bool = False
    # a histogram's bucket set changed between scrapes ("8 -> 12 buckets at <ns>"): Kong exposes a bucket only once
    # a request fell into it, and cumulative_to_delta starts a new series (its first scrape a baseline, not
    # exported) when the bounds change, so that interval's observations are lost before any export
    bucket_changes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.scraped_after_traffic and all(self.arrived.get(s, 0) >= n for s, n in self.expected.items())

    @property
    def duplicated(self) -> bool:
        """Something arrived twice (or a metric sum exceeds the requests counted)."""
        return any(self.duplicates.values()) or any(self.arrived.get(s, 0) > n for s, n in self.expected.items())

    def lines(self) -> list[str]:
        return [f"{signal}: expected {n}, arrived {self.arrived.get(signal, 0)}, duplicated "
                f"{len(self.duplicates.get(signal, []))}" for signal, n in self.expected.items()]


@dataclass
class OutageRun:
    """One outage: the traffic around it, what the sink refused, the collector's counters, what arrived."""

    outage: Outage
    policy: ExporterPolicy
    route: Route
    baseline_ns: int
    traffic: Traffic
    during_outage: list[str] = field(default_factory=list)     # request ids sent while the sink refused
    outage_ended: float = 0.0                                   # time.monotonic() when the sink recovered
    counters_before: dict[str, float] | None = None
    refused_for: float = 0.0                                    # seconds the sink actually refused (wall time)
    counters_after: dict[str, float] | None = None
    peak_queue: float = 0.0                                     # requests queued, all signals together
    peak_queue_by_signal: dict[str, float] = field(default_factory=dict)
    delivered_after: float | None = None                        # seconds after recovery, when complete
    delivery: Delivery = field(default_factory=Delivery)
    rejections: list[Rejection] = field(default_factory=list)
    tolerated: str = ""                                         # a NEW_HISTOGRAM_BUCKET loss judge() let pass

    def refusals(self) -> dict[str, int]:
        return dict(collections.Counter(f"{r.signal} HTTP {r.http_status}" for r in self.rejections
                                        if r.reason == FAULT_REASON))

    def facts(self) -> dict[str, Any]:
        return {"outage": f"{self.outage.describe()}; refused for {self.refused_for:.1f}s of wall time",
                "policy": self.policy.describe(),
                "requests sent / during the outage": f"{self.traffic.sent} / {len(self.during_outage)}",
                "delivery": "; ".join(self.delivery.lines()),
                "sink refusals (injected)": self.refusals(),
                "collector send_failed": counter_increase(self.counters_before, self.counters_after, "send_failed_"),
                "collector enqueue_failed": counter_increase(self.counters_before, self.counters_after,
                                                             "enqueue_failed_"),
                "collector queue_size now / peak": f"{(self.counters_after or {}).get('queue_size')} / "
                                                   f"{self.peak_queue:g}",
                "histogram bucket changes": self.delivery.bucket_changes,
                "collector counters published": self.counters_after is not None}


def _answered_200(traffic: Traffic) -> int:
    return sum(1 for s in traffic.statuses if s == 200)


def observe_delivery(stack: Stack, run: OutageRun, complete_traces: dict[str, int]) -> Delivery:
    """Count what arrived of ``run``'s traffic (``complete_traces`` caches traces already seen whole)."""
    ids = run.traffic.request_ids
    wanted = set(ids)
    delivery = Delivery()
    logs = [r for r in claims.expect_logs.kong_access_logs(stack.sink.logs())
            if claims.expect_logs.request_id(r) in wanted]
    _count(delivery, "logs", len(wanted), [claims.expect_logs.request_id(r) for r in logs])
    sampled = {claims.expect_logs.request_id(r) for r in logs if claims.kong_sampled(r) is not False}
    sampled |= wanted - {claims.expect_logs.request_id(r) for r in logs}   # unknown yet: expect its trace
    roots = [s for s in stack.sink.spans(name="kong") if s.get("attributes", {}).get("kong.request.id") in wanted]
    _count(delivery, "kong root spans", len(sampled), [str(s["attributes"]["kong.request.id"]) for s in roots])
    _trace_spans(stack, delivery, roots, complete_traces)
    _metric_deltas(stack, delivery, run)
    return delivery


def _count(delivery: Delivery, signal: str, expected: int, keys: Sequence[str]) -> None:
    counts = collections.Counter(keys)
    delivery.expected[signal] = expected
    delivery.arrived[signal] = len(counts)
    delivery.duplicates[signal] = sorted(k for k, n in counts.items() if n > 1)


def _trace_spans(stack: Stack, delivery: Delivery, roots: Sequence[Mapping[str, Any]],
                 complete_traces: dict[str, int]) -> None:
    """Every span of the outage requests' traces: the whole service path there, no span id twice."""
    path = claims.TRACE_PATH
    whole, duplicates = 0, []
    for trace_id in sorted({str(r["trace_id"]) for r in roots}):
        spans = stack.sink.trace(trace_id)
        ids = collections.Counter(str(s.get("span_id")) for s in spans)
        duplicates += [f"{trace_id}/{span_id}" for span_id, n in ids.items() if n > 1]
        if {str(s.get("service_name")) for s in spans} >= set(path):
            complete_traces[trace_id] = len(spans)
            whole += 1
    delivery.expected["whole traces"] = delivery.expected["kong root spans"]
    delivery.arrived["whole traces"] = whole
    delivery.duplicates["whole traces"] = duplicates


def _metric_deltas(stack: Stack, delivery: Delivery, run: OutageRun) -> None:
    """The route's request counter and latency histogram count: sum of deltas since the baseline scrape = requests
    answered; windows contiguous; no point twice."""
    points = list(stack.sink.metric_points())
    after = run.traffic.ended_ns + claims.KONG_SYNC_NS
    delivery.scraped_after_traffic = any(int(p["time_unix_nano"]) > after for p in points
                                         if str(p["name"]).startswith("kong_"))
    expected = _answered_200(run.traffic)
    for name, value_field in ((claims.REQUEST_COUNTER, "value"), (claims.LATENCY_HISTOGRAM, "count")):
        selected = expect_metrics.select(points, name, run.baseline_ns, **{claims.ROUTE_LABEL: run.route.kong_route})
        if name == claims.REQUEST_COUNTER:
            selected = [p for p in selected if p["attributes"].get("code") == "200"]
        windows = collections.Counter((expect_metrics.series_key(p), int(p["start_unix_nano"]),
                                       int(p["time_unix_nano"])) for p in selected)
        signal = f"{name} (sum of deltas)"
        delivery.expected[signal] = expected
        delivery.arrived[signal] = int(expect_metrics.delta_total(selected, value_field))
        delivery.duplicates[signal] = [f"window {start}..{end}" for (_k, start, end), n in windows.items() if n > 1]
        try:
            expect_metrics.assert_contiguous_windows(selected, min_points=1)
        except ExpectationFailed:
            delivery.metric_windows_ok = False
        # against the series' points before the baseline too: the lost window may be the first one after it
        series = expect_metrics.select(points, name, 0, **{claims.ROUTE_LABEL: run.route.kong_route})
        delivery.bucket_changes += _bucket_changes(series, run.baseline_ns)


def _bucket_changes(points: Sequence[Mapping[str, Any]], after_ns: int) -> list[str]:
    """Changes of a histogram's bucket count between consecutive points, where the later one ends after
    ``after_ns``."""
    ordered = sorted((p for p in points if "explicit_bounds" in p), key=lambda p: int(p["start_unix_nano"]))
    return [f"{p['name']}: {len(a['explicit_bounds']) + 1} -> {len(p['explicit_bounds']) + 1} buckets in the window "
            f"ending {p['time_unix_nano']}" for a, p in itertools.pairwise(ordered)
            if len(a["explicit_bounds"]) != len(p["explicit_bounds"]) and int(p["time_unix_nano"]) > after_ns]


# ------------------------------------------------------------------------------------------------ the claim

def baseline_scrape(stack: Stack, route: Route, requests: int = 10) -> int:
    """Time of a Kong scrape taken after ``requests`` requests on ``route``: its series exist and are anchored, and
    its latency histogram has the buckets its usual latencies fall into (a bucket Kong exposes for the first time
    later costs that window, see :attr:`Delivery.bucket_changes`)."""
    primer = send(stack.gateway_url, route.path, requests)
    claims.require_ok(primer, requests)
    return claims.wait_for_scrape_after(stack, primer.ended_ns + claims.KONG_SYNC_NS, "the outage claim's baseline")


def drive_outage(stack: Stack, outage: Outage, route: Route, rate: float, lead: float, tail: float,
                 on_tick: Callable[[], None] | None = None) -> tuple[Traffic, list[str], float, float]:
    """Send up to ``rate`` requests/s on ``route`` for ``lead`` + the outage + ``tail`` seconds of wall time while
    the sink refuses during the outage; the faults are cleared whatever happens. Phases follow the clock, not the
    number of requests sent (a busy machine sends fewer). Returns the traffic, the ids sent during the outage,
    ``time.monotonic()`` of the recovery and how long the sink actually refused."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate}")
    total = Traffic(path=route.path, started_ns=now_ns())
    during: list[str] = []
    throttled_until = lead + outage.seconds * outage.throttled_share
    phase, began_outage, recovered = "lead", 0.0, 0.0
    began = time.monotonic()
    tick = 0
    try:
        while (elapsed := time.monotonic() - began) < lead + outage.seconds + tail:
            if phase == "lead" and elapsed >= lead:
                if outage.slow_ms:
                    stack.sink.inject_fault(None, None, latency_ms=outage.slow_ms)
                    phase = "unavailable"
                else:
                    phase = "throttled" if outage.throttled_share > 0 else "unavailable"
                    stack.sink.inject_fault(429 if phase == "throttled" else 503, None,
                                            retry_after=outage.retry_after)
                began_outage = time.monotonic()
            if phase == "throttled" and elapsed >= throttled_until:
                stack.sink.clear_faults()
                stack.sink.inject_fault(503, None, retry_after=outage.retry_after)
                phase = "unavailable"
            if phase == "unavailable" and elapsed >= lead + outage.seconds:
                stack.sink.clear_faults()
                phase, recovered = "tail", time.monotonic()
            one = send(stack.gateway_url, route.path)
            _extend(total, one)
            if phase in ("throttled", "unavailable"):
                during += one.request_ids
            if on_tick is not None:
                on_tick()
            tick += 1
            time.sleep(max(0.0, began + tick / rate - time.monotonic()))
    finally:
        stack.sink.clear_faults()
    recovered = recovered or time.monotonic()
    total.ended_ns = now_ns()
    return total, during, recovered, recovered - (began_outage or recovered)


def _extend(total: Traffic, one: Traffic) -> None:
    total.request_ids += one.request_ids
    total.statuses += one.statuses
    total.errors += one.errors
    total.latencies_ms += one.latencies_ms


def run_outage(stack: Stack, outage: Outage | None = None, *, route: Route | None = None, rate: float = 5.0,
               lead: float = 2.0, tail: float = 2.0) -> OutageRun:
    """Drive one outage and wait (up to its bound) until everything of the traffic arrived or is known lost."""
    outage = outage or Outage.from_env()
    route = route or claims.TRACES_ROUTE
    policy = stack_policy(stack)
    baseline = baseline_scrape(stack, route)
    started = now_ns()
    before = collector_counters(stack)
    peak: dict[str, float] = {}
    sampled = {"at": 0.0}

    def sample_queue() -> None:
        if time.monotonic() - sampled["at"] < 1.0:   # one scrape of the collector per second is plenty
            return
        sampled["at"] = time.monotonic()
        for name, value in (collector_counters(stack) or {}).items():
            if name.startswith("queue_size"):
                peak[name] = max(peak.get(name, 0.0), value)

    traffic, during, recovered, refused_for = drive_outage(stack, outage, route, rate, lead, tail, sample_queue)
    claims.require_ok(traffic, len(traffic.statuses))
    run = OutageRun(outage, policy, route, baseline, traffic, during, recovered, before, refused_for=refused_for)
    complete: dict[str, int] = {}
    deadline = outage.bound(policy) - (time.monotonic() - recovered)

    def observe() -> Delivery:
        run.delivery = observe_delivery(stack, run, complete)
        run.counters_after = collector_counters(stack)
        sample_queue()
        return run.delivery

    def conclusive(delivery: Delivery) -> bool:
        lost = counter_increase(before, run.counters_after, "send_failed_") or counter_increase(
            before, run.counters_after, "enqueue_failed_")
        drained = (run.counters_after or {}).get("queue_size", 0.0) == 0
        settled = time.monotonic() - recovered > outage.retry_after + policy.scrape_interval + FLUSH_SECONDS
        return delivery.complete or bool(lost and drained and settled) or _unexpected(stack, started) is not None

    try:
        poll_until(observe, conclusive, what="the outage traffic's traces, metric deltas and access logs",
                   timeout=max(deadline, 1.0), interval=1.0)
        if run.delivery.complete:
            run.delivered_after = time.monotonic() - recovered
    except WaitTimeout:
        pass  # judged below, with the evidence
    run.peak_queue = peak.get("queue_size", 0.0)
    run.peak_queue_by_signal = {name[len("queue_size["):-1]: value for name, value in peak.items() if "[" in name}
    run.rejections = probe.rejections_since(stack, started)
    return run


def _unexpected(stack: Stack, since_ns: int) -> list[Rejection] | None:
    """Refusals the sink gave on its own (not the injected outage): conclusive at once."""
    found = [r for r in probe.rejections_since(stack, since_ns) if r.reason != FAULT_REASON]
    return found or None


def judge(run: OutageRun, *, tolerate_new_bucket: bool = False) -> None:
    """Raise :class:`ExpectationFailed` unless everything arrived exactly once within the bound; the cause says
    why from the collector's own counters: ``QUEUE_FULL`` (enqueue_failed rose: the sending queue was too small),
    ``DROPPED_ON_SEND_FAILURE`` (send_failed rose: a failed export was not retried to success -- retries off or
    ``max_elapsed_time`` over), ``LATE`` (nothing dropped, still queued or in flight at the bound),
    ``DUPLICATES``, ``SINK_REJECTIONS`` (a refusal the outage did not inject), ``NEW_HISTOGRAM_BUCKET`` (only
    the latency histogram's sum short, nothing dropped by the exporter, and its bucket set changed: lost in the
    delta conversion, not by the outage) or ``OUTAGE_LOSS`` (lost, and the collector's counters do not say where).

    ``tolerate_new_bucket`` lets a ``NEW_HISTOGRAM_BUCKET`` loss pass (recorded in ``run.tolerated``): the request
    counter travels in the same scrapes and export batches as the histogram, so a loss caused by the outage still
    shows there; the histogram's own exactness is claim 2's to judge."""
    unexpected = [r for r in run.rejections if r.reason != FAULT_REASON]
    evidence = Evidence(rejections=tuple(unexpected or run.rejections)[:50], hop="collector -> sink",
                        expected=sum(run.delivery.expected.values()),
                        seen=sum(min(run.delivery.arrived.get(s, 0), n) for s, n in run.delivery.expected.items()),
                        facts=run.facts())
    bound = run.outage.bound(run.policy)
    if unexpected:
        raise ExpectationFailed("SINK_REJECTIONS", "the sink refused data the outage did not inject: "
                                + ", ".join(sorted({f"HTTP {r.http_status} {r.reason}" for r in unexpected})),
                                evidence=evidence)
    short = [s for s, n in run.delivery.expected.items() if run.delivery.arrived.get(s, 0) < n]
    if not short and run.delivery.scraped_after_traffic:
        if run.delivery.duplicated or not run.delivery.metric_windows_ok:
            over = {s: f"{run.delivery.arrived.get(s)} for {n}" for s, n in run.delivery.expected.items()
                    if run.delivery.arrived.get(s, 0) > n}
            dups = {s: d[:5] for s, d in run.delivery.duplicates.items() if d}
            overlap = "" if run.delivery.metric_windows_ok else " (metric windows overlap)"
            raise ExpectationFailed("DUPLICATES", "data of the outage traffic arrived more than once: "
                                    f"{dups or ''}{over or ''}{overlap}", evidence=evidence)
        return
    send_failed = counter_increase(run.counters_before, run.counters_after, "send_failed_")
    enqueue_failed = counter_increase(run.counters_before, run.counters_after, "enqueue_failed_")
    missing = "; ".join(run.delivery.lines())
    histogram_only = all(claims.LATENCY_HISTOGRAM in signal for signal in short)
    if histogram_only and run.delivery.bucket_changes and not (enqueue_failed or send_failed):
        cause, why = "NEW_HISTOGRAM_BUCKET", ("the exporter dropped nothing; a histogram gained buckets and "
                                              "cumulative_to_delta restarted the series, losing one window: "
                                              + "; ".join(run.delivery.bucket_changes[:3]))
        twice = {s: d[:5] for s, d in run.delivery.duplicates.items() if d}
        if tolerate_new_bucket and not twice:
            run.tolerated = f"{why} ({missing})"
            return
    elif enqueue_failed:
        cause, why = "QUEUE_FULL", f"the exporter's sending queue was full and refused {enqueue_failed}"
    elif send_failed:
        cause, why = "DROPPED_ON_SEND_FAILURE", f"the exporter gave up on failed sends {send_failed}"
    elif (queued := (run.counters_after or {}).get("queue_size", 0)) > 0:
        cause, why = "LATE", f"nothing dropped, {queued:g} request(s) still queued"
    elif not short:
        cause, why = "LATE", "every count is there but no Kong scrape taken after the traffic arrived"
    else:
        cause, why = "OUTAGE_LOSS", "lost, and the collector's own counters do not say where"
    raise ExpectationFailed(cause, f"not everything sent around a {run.outage.seconds:g}s outage arrived within "
                            f"{bound:g}s of recovery: {why}", f"  {missing}", evidence)


def check_outage_loses_nothing(stack: Stack, outage: Outage | None = None, *, route: Route | None = None,
                               rate: float = 5.0, tolerate_new_bucket: bool = False) -> OutageRun:
    """Claim 5 (see the module docstring): drive an outage with traffic flowing, then require every trace (Kong
    root and the whole service path), Kong metric delta and access log of the traffic to arrive exactly once within
    :meth:`Outage.bound` of the recovery."""
    run = run_outage(stack, outage, route=route, rate=rate)
    judge(run, tolerate_new_bucket=tolerate_new_bucket)
    return run
