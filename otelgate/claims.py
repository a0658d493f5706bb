"""The four claims otelgate proves, as functions of a running :class:`~otelgate.stacks.base.Stack`.

Each claim drives its own traffic through the gateway, watches the sink until the evidence is conclusive (not until
a timeout: a refusal at the sink, Kong's own "not sampled" decision in its access log or an unreachable collector
end a check at once), and then asserts with :mod:`otelgate.expect`. A failure is an
:class:`~otelgate.expect.errors.ExpectationFailed` with a cause and structured evidence. Suites call these;
negative controls call the same functions under a fault and check cause and evidence. Nothing here knows which
stack it runs on. The sampling claim is in :mod:`otelgate.sampling_claim`, the outage claim in
:mod:`otelgate.resilience`.
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from otelgate import claims_services, probe, topology
from otelgate.expect import logs as expect_logs
from otelgate.expect import metrics as expect_metrics
from otelgate.expect import traces as expect_traces
from otelgate.expect.errors import Evidence, ExpectationFailed, Rejection
from otelgate.stacks.base import Stack
from otelgate.traffic import Traffic, checkpoint, now_ns, send
from otelgate.waiting import WaitTimeout, poll_until

# The deployment's routes and names, from otelgate.toml (otelgate.topology), read once when the claims are imported;
# the pytest plugin applies --otelgate-manifests before that.
TOPOLOGY = topology.current()
KONG_SERVICE = TOPOLOGY.kong_service_name
TRACES_ROUTE, METRICS_ROUTE, LOGS_ROUTE, SAMPLING_ROUTE = (TOPOLOGY.route_for(claim) for claim in topology.CLAIMS)
TRACE_PATH = TRACES_ROUTE.service_path
REQUEST_COUNTER = TOPOLOGY.request_counter
LATENCY_HISTOGRAM = TOPOLOGY.latency_histogram
ROUTE_LABEL = TOPOLOGY.route_label
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
KONG_SYNC_NS = 1_100_000_000  # Kong syncs worker counters to shared memory every second


@dataclass(frozen=True)
class Timing:
    """How long a stack may take to deliver. Local defaults; cluster stacks pass larger values."""

    signal: float = 30.0          # longest wait for one signal to arrive
    settle: float = 4.0           # a trace whose span count is unchanged this long is complete
    scrape: float = 20.0          # longest wait for the next Prometheus scrape to reach the sink
    down: float = 1.0             # the collector unreachable this long (probed twice) counts as down
    service_export: float = 5.0   # longest wait for a demo service's next metric export (local: every 2 s)


def timing_of(stack: Stack) -> Timing:
    return getattr(stack, "timing", None) or Timing()


def effective_rate(stack: Stack) -> float:
    """The sampling rate in force: the plugin's ``sampling_rate`` if set, else kong.conf ``tracing_sampling_rate``
    (Kong/kong@3.9.1 kong/pdk/tracing.lua:607)."""
    settings = stack.settings
    return settings.sampling_rate if settings.sampling_rate is not None else settings.tracing_sampling_rate


def _pipeline_state(stack: Stack) -> str:
    """One line on what the sink has seen, for failure messages."""
    try:
        stats = stack.sink.stats()
        rejections = stack.sink.rejections()
    except Exception as exc:  # the sink itself may be the problem
        return f"sink unreachable: {exc!r}"
    reasons = sorted({str(r.get("reason")) for r in rejections})
    return f"sink stats {stats}; rejections: {reasons or 'none'}"


def require_ok(traffic: Traffic, minimum: int) -> None:
    ok = [s for s in traffic.statuses if s < 400]
    if len(ok) < minimum or len(traffic.request_ids) < minimum:
        raise ExpectationFailed("GATEWAY_ERRORS", f"need {minimum} successful requests: {traffic.describe()}",
                                evidence=Evidence(expected=minimum, seen=len(ok), hop="client -> kong"))


def refused(stack: Stack, signal: str, since_ns: int, what: str,
            concerns: Callable[[Rejection], bool] = lambda _r: True) -> ExpectationFailed | None:
    """``SINK_REJECTIONS`` if the sink refused ``signal`` data since ``since_ns`` and a refusal ``concerns`` the
    check (conclusive at once); the evidence lists every refusal of ``signal`` since then."""
    rejections = probe.rejections_since(stack, since_ns, signal)
    if not any(concerns(r) for r in rejections):
        return None
    reasons = sorted({f"HTTP {r.http_status} {r.reason}" for r in rejections})
    return ExpectationFailed("SINK_REJECTIONS", f"the sink refused {signal} ({what}): {', '.join(reasons)}",
                             "\n".join(f"  {r}" for r in rejections[:5]),
                             Evidence(rejections=tuple(rejections), hop="collector -> sink",
                                      collector_reachable=True))


# ------------------------------------------------------------------------------------------------ access logs

def access_logs_of(stack: Stack, request_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The Kong access-log record of each of ``request_ids`` that reached the sink, by request id."""
    wanted = set(request_ids)
    return {expect_logs.request_id(r): r for r in expect_logs.kong_access_logs(stack.sink.logs())
            if expect_logs.request_id(r) in wanted}


def kong_sampled(record: Mapping[str, Any]) -> bool | None:
    """Kong's sampling decision for the request, from the traceparent it injected upstream (Kong serializes the
    request headers after injecting; None when it injected no W3C context)."""
    match = TRACEPARENT.match(str(expect_logs.attribute(record, "request.headers.traceparent", "")))
    return None if match is None else int(match.group(3), 16) & 1 == 1


def kong_roots_of(stack: Stack, request_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The Kong root span of each of ``request_ids`` that reached the sink, by request id."""
    wanted = set(request_ids)
    return {str(s["attributes"]["kong.request.id"]): s for s in stack.sink.spans(name="kong")
            if s.get("attributes", {}).get("kong.request.id") in wanted}


# ---------------------------------------------------------------------------------------------------- traces

@dataclass
class TraceWatch:
    """What the trace claim has seen of one request so far (updated on every poll)."""

    request_id: str
    since_ns: int
    root: Mapping[str, Any] | None = None
    log: Mapping[str, Any] | None = None
    spans: list[Mapping[str, Any]] = field(default_factory=list)
    count_since: float = field(default_factory=time.monotonic)
    down_since: float | None = None
    reachable: bool | None = None

    @property
    def trace_id(self) -> str | None:
        if self.root is not None:
            return str(self.root["trace_id"])
        if self.log is not None:
            return str(self.log.get("trace_id") or "") or None
        return None

    def services(self) -> list[str]:
        return sorted({str(s.get("service_name")) for s in self.spans})


TraceHook = Callable[[Stack, TraceWatch], None]


def _observe_trace(stack: Stack, watch: TraceWatch, path: Sequence[str]) -> TraceWatch:
    if watch.root is None:
        watch.root = kong_roots_of(stack, [watch.request_id]).get(watch.request_id)
    if watch.log is None:
        watch.log = access_logs_of(stack, [watch.request_id]).get(watch.request_id)
    if watch.trace_id:
        spans: list[Mapping[str, Any]] = list(stack.sink.spans(trace_id=watch.trace_id))
        if len(spans) != len(watch.spans):
            watch.count_since = time.monotonic()
        watch.spans = spans
    if watch.root is None or not _path_ok(watch.spans, path):
        watch.reachable = probe.collector_reachable(stack)
        if watch.reachable is False:
            watch.down_since = watch.down_since or time.monotonic()
        else:
            watch.down_since = None
    return watch


def _path_ok(spans: Sequence[Mapping[str, Any]], path: Sequence[str] = TRACE_PATH) -> bool:
    try:
        expect_traces.assert_service_path(expect_traces.TraceTree(list(spans)), path)
    except ExpectationFailed:
        return False
    return True


def _trace_conclusion(stack: Stack, watch: TraceWatch, path: Sequence[str]) -> ExpectationFailed | bool:
    """A failure, True (the trace is there and settled: assert on it) or False (not conclusive yet)."""
    timing = timing_of(stack)
    rejected = refused(stack, "traces", watch.since_ns, f"request {watch.request_id}")
    if rejected is not None:
        return rejected
    quiet = time.monotonic() - watch.count_since
    down = watch.down_since is not None and time.monotonic() - watch.down_since >= timing.down
    if watch.root is not None:
        if _path_ok(watch.spans, path):  # every hop there: done once no span names a missing parent, or quiet
            return quiet >= 1.0 or not expect_traces.TraceTree(list(watch.spans)).orphans()
        if down:
            return incomplete(watch, path)
        return quiet >= timing.settle
    if watch.log is not None and kong_sampled(watch.log) is False:
        return not_sampled(watch, effective_rate(stack))
    if down:
        return incomplete(watch, path) if watch.spans else collector_down(
            watch, probe.collector_url(stack, probe.HEALTH_URL_KEY))
    return False


def not_sampled(watch: TraceWatch, rate: float) -> ExpectationFailed:
    log = watch.log or {}
    return ExpectationFailed(
        "NOT_SAMPLED", f"Kong decided not to sample request {watch.request_id}: its access log arrived, "
        "with the not-sampled traceparent Kong injected upstream, and no Kong root span",
        f"  injected traceparent: {expect_logs.attribute(log, 'request.headers.traceparent')}",
        Evidence(collector_reachable=True, expected=1, seen=0,
                 facts={"kong_decision": "not sampled", "access_log_arrived": True, "kong_root": "absent",
                        "rate_in_force": rate}))


def collector_down(watch: TraceWatch, health_url: str | None) -> ExpectationFailed:
    return ExpectationFailed(
        "COLLECTOR_DOWN", f"nothing of request {watch.request_id} reached the sink and the collector does not "
        "accept connections", f"  collector health endpoint: {health_url}",
        Evidence(hop="kong -> collector", collector_reachable=False, expected=1, seen=0,
                 facts={"access_log_arrived": watch.log is not None, "spans_seen": len(watch.spans)}))


def incomplete(watch: TraceWatch, path: Sequence[str]) -> ExpectationFailed:
    missing = [service for service in path if service not in watch.services()]
    return ExpectationFailed(
        "INCOMPLETE_TRACE", f"trace {watch.trace_id} of request {watch.request_id} stopped arriving with "
        f"{', '.join(missing) or 'links'} missing, and the collector went down",
        expect_traces.TraceTree(watch.spans).render(),
        Evidence(hop="-> collector", collector_reachable=False, expected=len(path), seen=len(path) - len(missing),
                 facts={"services_seen": watch.services(), "services_missing": missing}))


def wait_for_trace_of_request(stack: Stack, request_id: str, path: Sequence[str] = TRACE_PATH, *,
                              since_ns: int | None = None, hook: TraceHook | None = None) -> expect_traces.TraceTree:
    """The trace whose Kong root carries ``request_id``, once it is conclusive: complete and quiet for a second,
    or unchanged for ``settle``; a conclusive failure (refused, not sampled, collector down, incomplete) raises."""
    timing = timing_of(stack)
    watch = TraceWatch(request_id, since_ns if since_ns is not None else now_ns())
    outcome: dict[str, ExpectationFailed | bool] = {"value": False}

    def observe() -> TraceWatch:
        _observe_trace(stack, watch, path)
        if hook is not None:
            hook(stack, watch)
        outcome["value"] = _trace_conclusion(stack, watch, path)
        return watch

    try:
        poll_until(observe, lambda _w: outcome["value"] is not False, what=f"the trace of request {request_id}",
                   timeout=timing.signal, interval=0.2)
    except WaitTimeout as exc:
        if watch.root is not None:
            return expect_traces.TraceTree(watch.spans)
        raise ExpectationFailed("NO_TRACE", f"no trace reached the sink for request {request_id}",
                                f"{exc}\n{_pipeline_state(stack)}",
                                Evidence(collector_reachable=watch.reachable, expected=1, seen=0,
                                         facts={"access_log_arrived": watch.log is not None,
                                                "spans_seen": len(watch.spans),
                                                "exporter_send_failures": probe.exporter_send_failures(stack)})
                                ) from exc
    if isinstance(outcome["value"], ExpectationFailed):
        raise outcome["value"]
    return expect_traces.TraceTree(watch.spans)


def check_trace_spans_services(stack: Stack, path: Sequence[str] = TRACE_PATH, url_path: str = TRACES_ROUTE.path, *,
                               hook: TraceHook | None = None) -> expect_traces.TraceTree:
    """One request through Kong yields ONE trace: kong-otel -> coupon -> membership, each hop parent-linked, the
    first upstream SERVER span a child of ``kong.balancer``, no missing parents, the deployment attribute on every
    span; a request sent just before it with a not-sampled W3C parent yields no span at all. ``hook`` is called on
    every poll (negative controls use it to break the pipeline while the trace is in flight)."""
    started = now_ns()
    parent = claims_services.UnsampledParent.new()
    require_ok(send(stack.gateway_url, url_path, headers_per_request=[parent.headers]), 1)
    traffic = send(stack.gateway_url, url_path)
    require_ok(traffic, 1)
    tree = wait_for_trace_of_request(stack, traffic.request_ids[0], path, since_ns=started, hook=hook)
    expect_traces.assert_one_trace(tree)
    expect_traces.assert_kinds(tree, {"kong": "SERVER", "kong.balancer": "CLIENT"})
    hops = expect_traces.assert_service_path(tree, path)
    expect_traces.assert_parent(tree, hops[1], "kong.balancer")
    expect_traces.assert_complete(tree)
    claims_services.assert_deployment_attribute(tree.spans, stack, "stored spans of the trace", "traces")
    claims_services.assert_parent_decision_followed(stack, parent)
    return tree


# --------------------------------------------------------------------------------------------------- metrics

def _kong_points(stack: Stack) -> list[Mapping[str, Any]]:
    return [p for p in stack.sink.metric_points() if str(p["name"]).startswith("kong_")]


def latest_scrape(stack: Stack, before_ns: int) -> int:
    """The time of the newest Kong scrape in the sink taken before ``before_ns`` (0 if none)."""
    times = [int(p["time_unix_nano"]) for p in _kong_points(stack) if int(p["time_unix_nano"]) < before_ns]
    return max(times, default=0)


def wait_for_scrape_after(stack: Stack, after_ns: int, what: str, since_ns: int | None = None) -> int:
    """Wait until a Kong scrape taken after ``after_ns`` reached the sink; return its time. A refusal of metrics
    since ``since_ns`` ends the wait at once (``SINK_REJECTIONS`` with the refusals)."""
    timing = timing_of(stack)
    since = after_ns if since_ns is None else since_ns

    def observe() -> tuple[int, ExpectationFailed | None]:
        times = [int(p["time_unix_nano"]) for p in _kong_points(stack) if int(p["time_unix_nano"]) > after_ns]
        return (min(times, default=0), refused(stack, "metrics", since, what, concerns=_about_kong))

    try:
        first, rejected = poll_until(observe, lambda o: o[0] > 0 or o[1] is not None, what=what,
                                     timeout=timing.scrape, interval=0.3)
    except WaitTimeout as exc:
        raise ExpectationFailed("NO_METRICS", f"no Kong metrics reached the sink ({what})",
                                f"{exc}\n{_pipeline_state(stack)}",
                                Evidence(collector_reachable=probe.collector_reachable(stack), expected=1, seen=0,
                                         facts={"exporter_send_failures": probe.exporter_send_failures(stack)})
                                ) from exc
    if rejected is not None:
        raise rejected
    return first


def _traffic_then_scrape(stack: Stack, requests: int, url_path: str, started: int, baseline: int, route: str
                         ) -> tuple[Traffic, claims_services.ServiceMetrics, list[Mapping[str, Any]]]:
    quiet = claims_services.quiet_since(_kong_points(stack), route, baseline)
    path = next((r.service_path for r in TOPOLOGY.routes.values() if r.kong_route == route), ("",))
    services = claims_services.ServiceMetrics.before_traffic(stack, path[1:], quiet,
                                                             started, timing_of(stack).service_export, now_ns())
    traffic = send(stack.gateway_url, url_path, requests)
    require_ok(traffic, requests)
    wait_for_scrape_after(stack, traffic.ended_ns + KONG_SYNC_NS, "a scrape after the traffic", since_ns=started)
    return traffic, services, _kong_points(stack)


def _anchored(points: Sequence[Mapping[str, Any]], baseline: int, route: str) -> bool:
    """The route's windows after ``baseline`` start at it. False means a collector restart since the baseline: its
    first scrape only sets cumulative_to_delta's baseline, so nothing was exported since, or the counter's first
    window starts after the baseline. Judged on the counter (on the histogram only when the counter is absent, the
    claim's MISSING_METRIC to report): a histogram-only discontinuity, e.g. cumulative_to_delta dropping the scrape
    in which Kong exposed a new bucket, is a loss the claim must report, not retry around."""
    counter = expect_metrics.select(points, REQUEST_COUNTER, baseline, **{ROUTE_LABEL: route})
    reference = counter or expect_metrics.select(points, LATENCY_HISTOGRAM, baseline, **{ROUTE_LABEL: route})
    return bool(reference) and all(int(p["start_unix_nano"]) <= baseline for p in reference)


def _about_kong(rejection: Rejection) -> bool:
    """A refusal of Kong's metrics: the whole request, or a Kong metric by name (the services' own metrics travel
    the same pipeline; their refusals fail the claim at its end, with the rest)."""
    return rejection.name is None or rejection.name.startswith("kong_")


def rejections_since(stack: Stack, after_ns: int) -> list[Mapping[str, Any]]:
    """Rejections the sink recorded after ``after_ns`` (earlier ones belong to earlier checks)."""
    return [r for r in stack.sink.rejections() if float(r.get("at", 0)) * 1e9 >= after_ns]


def check_metrics_delta_and_counts(
    stack: Stack, requests: int = 20, url_path: str = METRICS_ROUTE.path,
    route: str = METRICS_ROUTE.kong_route,
) -> list[Mapping[str, Any]]:
    """Kong's metrics reach the backend as DELTA, nothing is refused, and the request counter and the latency
    histogram count exactly the requests sent, with ``kong.deployment.name`` on every point.

    The baseline is the newest scrape already in the sink (the warm-up primed every route's series), so the check
    waits for one scrape: the first one taken after the traffic plus Kong's one-second counter sync. If the
    collector restarted since that scrape, its first scrape is a new baseline that is never exported (the window
    after the baseline is not anchored at it): the check then takes a fresh baseline and sends its traffic again.
    The histogram's count is judged by :func:`check_histogram_count` (a window lost to a bucket birth is subtracted
    as the counter measured it and reported; it waits one more scrape for the point proving it).
    """
    started = now_ns()
    baseline = latest_scrape(stack, started)
    traffic, services, points = (_traffic_then_scrape(stack, requests, url_path, started, baseline, route) if baseline
                                 else (None, None, []))
    if traffic is None or services is None or not _anchored(points, baseline, route):
        baseline = wait_for_scrape_after(stack, now_ns(), "a scrape before the traffic", since_ns=started)
        traffic, services, points = _traffic_then_scrape(stack, requests, url_path, started, baseline, route)
    # on the Dynatrace-profile sink cumulative points are refused, not stored: the refusal check above decides;
    # assert_all_delta's docstring says what it adds (and it refuses to pass on no data)
    expect_metrics.assert_all_delta(points)
    counter = expect_metrics.select(points, REQUEST_COUNTER, baseline, **{ROUTE_LABEL: route})
    if not counter:
        names = sorted({p["name"] for p in points})
        raise ExpectationFailed("MISSING_METRIC", f"no {REQUEST_COUNTER} points for route {route!r} after the "
                                f"traffic (is status_code_metrics on?)", f"Kong metrics seen: {names}",
                                Evidence(expected=requests, seen=0, facts={"metric": REQUEST_COUNTER}))
    selected = [p for p in counter if p["attributes"].get("code") == "200"]
    if expect_metrics.delta_total(selected) == 0:
        raise ExpectationFailed("NOT_COUNTED", f"{requests} requests sent, {REQUEST_COUNTER}{{route={route}}} "
                                "counted none (is status_code_metrics on?)", expect_metrics.describe_points(selected),
                                Evidence(expected=requests, seen=0, facts={"metric": REQUEST_COUNTER}))
    expect_metrics.assert_count(selected, requests, "value", f"{REQUEST_COUNTER}{{route={route}}}")
    if expect_metrics.delta_total(expect_metrics.select(points, LATENCY_HISTOGRAM, baseline,
                                                        **{ROUTE_LABEL: route}), "count") != requests:
        # a window lost to a new bucket is proven by the point after it (its bounds grew): wait for one more scrape;
        # if none comes, the count check below reports the shortfall with what there is
        try:
            wait_for_scrape_after(stack, max(int(p["time_unix_nano"]) for p in points),
                                  "the scrape after a short latency histogram", since_ns=started)
        except ExpectationFailed as exc:
            if exc.cause != "NO_METRICS":
                raise
        points = _kong_points(stack)
    check_histogram_count(points, baseline, route, requests)
    # windows are checked inside this claim's own window: a collector restart (an earlier control) legitimately
    # starts a new delta series
    in_window = expect_metrics.select(points, REQUEST_COUNTER, baseline - 1, **{ROUTE_LABEL: route})
    expect_metrics.assert_contiguous_windows(in_window)
    expect_metrics.assert_attribute_everywhere(points, TOPOLOGY.deployment_attribute,
                                               getattr(stack, "kong_deployment_name", None))
    expect_metrics.assert_no_rejections(rejections_since(stack, started), "metrics")
    # added because mutants survived (docs/mutation-report-2026-11-28.md): bandwidth_metrics off, the otlp receiver
    # missing from the metrics pipeline
    claims_services.check_bandwidth(points, baseline, route, wait_for_access_logs(stack, traffic, "the metrics "
                                                                                  "claim's traffic (bandwidth)"))
    services.check(stack, requests, traffic.ended_ns, timing_of(stack).scrape)
    return points


def _histogram_since(points: Sequence[Mapping[str, Any]], baseline: int, route: str) -> list[Mapping[str, Any]]:
    """The route's histogram points after ``baseline``, plus each series' newest point before it (a gap right after
    the baseline lies between that point and the next)."""
    series = expect_metrics.select(points, LATENCY_HISTOGRAM, 0, **{ROUTE_LABEL: route})
    anchors: dict[str, Mapping[str, Any]] = {}
    for point in series:
        if int(point["time_unix_nano"]) <= baseline:
            key = expect_metrics.series_key(point)
            if key not in anchors or int(point["time_unix_nano"]) > int(anchors[key]["time_unix_nano"]):
                anchors[key] = point
    return [*anchors.values(), *(p for p in series if int(p["time_unix_nano"]) > baseline)]


def check_histogram_count(points: Sequence[Mapping[str, Any]], baseline: int, route: str, requests: int) -> None:
    """The latency histogram counts ``requests`` after ``baseline``, less the requests of windows lost to a bucket
    birth: Kong exposes a bucket only once a request landed in it and cumulative_to_delta drops the point whose
    bounds changed (sources in :class:`~otelgate.expect.metrics.HistogramWindowLost`). Such a window is proven by the
    next point's grown bounds, its requests are the request counter's (exact, contiguous) deltas inside it, and it is
    reported as a :class:`~otelgate.expect.metrics.HistogramWindowLost` warning. Any other gap, or any other
    difference, is ``COUNT_MISMATCH``."""
    what = f"{LATENCY_HISTOGRAM}{{route={route}}}"
    window = _histogram_since(points, baseline, route)
    selected = [p for p in window if int(p["time_unix_nano"]) > baseline]
    counter = expect_metrics.select(points, REQUEST_COUNTER, 0, **{ROUTE_LABEL: route})
    explained, unexplained = expect_metrics.histogram_gaps(window, counter, since_ns=baseline)
    lost = sum(gap.requests for gap in explained)
    seen = int(expect_metrics.delta_total(selected, "count"))
    facts = {"metric": LATENCY_HISTOGRAM, "lost_to_bucket_births": [gap.describe() for gap in explained],
             "unexplained_gaps": unexplained}
    detail = "\n".join([*(f"  explained: {gap.describe()}" for gap in explained),
                        *(f"  UNEXPLAINED {gap}" for gap in unexplained), expect_metrics.describe_points(window)])
    if unexplained:
        raise ExpectationFailed("COUNT_MISMATCH", f"{what}: {len(unexplained)} gap(s) between windows not explained "
                                "by a bucket birth", detail, Evidence(expected=requests - lost, seen=seen, facts=facts))
    if not selected:
        raise ExpectationFailed("COUNT_MISMATCH", f"{what}: no window after the baseline reached the sink while "
                                f"{REQUEST_COUNTER}'s did", detail, Evidence(expected=requests, seen=0, facts=facts))
    expect_metrics.assert_all_delta(selected)
    if seen != requests - lost:
        because = f" (= {requests} sent - {lost} in windows lost to bucket births)" if explained else ""
        raise ExpectationFailed("COUNT_MISMATCH", f"{what}: sum of deltas is {seen}, expected {requests - lost}"
                                f"{because}", detail, Evidence(expected=requests - lost, seen=seen, facts=facts))
    for gap in explained:
        warnings.warn(expect_metrics.HistogramWindowLost(gap.describe()), stacklevel=3)


# ------------------------------------------------------------------------------------------------------ logs

def wait_for_access_logs(stack: Stack, traffic: Traffic, what: str) -> list[Mapping[str, Any]]:
    """Every access log of ``traffic``; a refusal of logs ends the wait at once, a timeout is ``NO_LOGS``."""
    timing = timing_of(stack)
    wanted = traffic.request_ids

    def observe() -> tuple[dict[str, Mapping[str, Any]], ExpectationFailed | None]:
        return access_logs_of(stack, wanted), refused(stack, "logs", traffic.started_ns, what)

    try:
        _records, rejected = poll_until(observe, lambda o: len(o[0]) >= len(set(wanted)) or o[1] is not None,
                                        what=f"{len(wanted)} Kong access logs ({what})", timeout=timing.signal,
                                        interval=0.2)
    except WaitTimeout as exc:
        seen = len(exc.last[0]) if isinstance(exc.last, tuple) else 0
        raise ExpectationFailed("NO_LOGS", f"{seen} of {len(set(wanted))} access logs reached the sink ({what})",
                                f"{exc}\n{_pipeline_state(stack)}",
                                Evidence(collector_reachable=probe.collector_reachable(stack),
                                         expected=len(set(wanted)), seen=seen)) from exc
    if rejected is not None:
        raise rejected
    return [r for r in expect_logs.kong_access_logs(stack.sink.logs()) if expect_logs.request_id(r) in set(wanted)]


def check_access_logs(stack: Stack, requests: int = 10, url_path: str = LOGS_ROUTE.path) -> list[Mapping[str, Any]]:
    """Every Kong access log of the traffic arrives once, with a clean 32-hex trace_id equal to the LogRecord
    trace id and the deployment attribute, each sampled request's log joins the stored trace with the same request
    id, and each service on the route that exports logs delivered its own record of each request (same trace id).

    The join is not optional: when the rate in force is above 0 it must run on at least one record."""
    timing = timing_of(stack)
    traffic = send(stack.gateway_url, url_path, requests)
    require_ok(traffic, requests)
    records = wait_for_access_logs(stack, traffic, "the logs claim's traffic")
    expect_logs.assert_one_record_per_request(records, traffic.request_ids)
    expect_logs.assert_clean_trace_ids(records, min_records=requests)
    claims_services.assert_deployment_attribute(records, stack, "Kong access logs", "logs")
    sampled = [r for r in records if kong_sampled(r) is not False]
    rate = effective_rate(stack)
    if not sampled:
        if rate > 0:
            raise ExpectationFailed("JOIN_NOT_RUN", f"rate {rate} in force, yet Kong sampled none of {len(records)} "
                                    "logged requests: the log-to-trace join would check nothing",
                                    evidence=Evidence(expected=1, seen=0, facts={"rate_in_force": rate}))
        claims_services.assert_service_logs(stack, records, LOGS_ROUTE.service_path[1:], timing.signal)
        return records
    ids = [expect_logs.request_id(r) for r in sampled]
    with contextlib.suppress(WaitTimeout):  # the join below reports what did not arrive
        poll_until(lambda: kong_roots_of(stack, ids), lambda roots: len(roots) >= len(set(ids)),
                   what="the Kong roots of the logged requests", timeout=timing.signal, interval=0.2)
    roots = list(kong_roots_of(stack, ids).values())
    trace_ids = {str(r["trace_id"]) for r in sampled}
    roots += [s for s in stack.sink.spans(name="kong") if s["trace_id"] in trace_ids and s not in roots]
    expect_logs.assert_joins_traces(sampled, roots)
    claims_services.assert_service_logs(stack, records, LOGS_ROUTE.service_path[1:], timing.signal)
    return records


# ------------------------------------------------------------------------------------------------- controls

@contextlib.contextmanager
def applied(stack: Stack, **changes: Any) -> Iterator[Stack]:
    """The stack with ``changes`` applied for the duration of the block, then restored."""
    before = stack.settings
    stack.reconfigure(**changes)
    try:
        yield stack
    finally:
        checkpoint()  # a replay must not see what arrives once the fault is lifted
        stack.reconfigure(**{key: getattr(before, key) for key in changes})


# ---------------------------------------------------------------------------------------------------- warm-up

ROUTE_PATHS = TOPOLOGY.route_paths


def prime(stack: Stack) -> dict[str, bool]:
    """Send one request per route and wait until all three signals arrived for them, or until the time is up or
    the sink refused a signal; return which signals arrived. Never raises on a missing signal: that is the
    matching claim's verdict to give, with its cause and evidence (readiness is not a verdict).

    Afterwards every route's Kong series exists (a later delta sum starts from a known point) and the collector's
    exporters have connected.
    """
    timing = timing_of(stack)
    started = now_ns()
    request_ids: list[str] = []
    for path in ROUTE_PATHS.values():
        traffic = send(stack.gateway_url, path)
        require_ok(traffic, 1)
        request_ids += traffic.request_ids
    ended = now_ns()

    def arrived() -> dict[str, bool]:
        routes = {p["attributes"].get(ROUTE_LABEL) for p in stack.sink.metric_points(name=REQUEST_COUNTER)
                  if int(p["time_unix_nano"]) > ended + KONG_SYNC_NS}
        return {"traces": len(kong_roots_of(stack, request_ids)) == len(request_ids),
                "logs": len(access_logs_of(stack, request_ids)) == len(request_ids),
                "metrics": set(ROUTE_PATHS) <= routes}

    def settled(state: dict[str, bool]) -> bool:
        return all(state[signal] or refused(stack, signal, started, "warm-up") is not None for signal in state)

    try:
        return poll_until(arrived, settled, what="traces, metrics and logs of the warm-up",
                          timeout=timing.signal + timing.scrape, interval=0.3)
    except WaitTimeout as exc:
        return dict(exc.last) if isinstance(exc.last, dict) else {"traces": False, "logs": False, "metrics": False}


def warm_up(stack: Stack) -> None:
    """:func:`prime`, and fail (``WARM_UP``) unless all three signals arrived."""
    state = prime(stack)
    if not all(state.values()):
        missing = [signal for signal, ok in state.items() if not ok]
        raise ExpectationFailed("WARM_UP", "the pipeline did not deliver all three signals for the warm-up "
                                f"requests (missing: {', '.join(missing)})", _pipeline_state(stack),
                                Evidence(facts={"arrived": state}))

