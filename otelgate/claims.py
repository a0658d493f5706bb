"""The four claims otelgate proves, as functions of a running :class:`~otelgate.stacks.base.Stack`.

Each claim drives its own traffic through the gateway, waits (bounded) for the pipeline to deliver, and then
asserts with :mod:`otelgate.expect`. Suites call these; negative controls call the same functions under a fault and
check the failure's ``cause``. Nothing here knows which stack it runs on.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otelgate.expect import logs as expect_logs
from otelgate.expect import metrics as expect_metrics
from otelgate.expect import sampling as expect_sampling
from otelgate.expect import traces as expect_traces
from otelgate.expect.errors import ExpectationFailed
from otelgate.stacks.base import Stack
from otelgate.traffic import Traffic, checkpoint, now_ns, send
from otelgate.waiting import WaitTimeout, poll_until

KONG_SERVICE = "kong-otel"
COUPON_PATH = "/coupon/coupons"
PRICING_PATH = "/pricing/price?id=1"
REQUEST_COUNTER = "kong_http_requests_total"
LATENCY_HISTOGRAM = "kong_request_latency_ms"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True)
class Timing:
    """How long a stack may take to deliver. Local defaults; cluster stacks pass larger values."""

    signal: float = 30.0          # longest wait for one signal to arrive
    settle: float = 4.0           # a trace whose span count is unchanged this long is complete
    scrape: float = 20.0          # longest wait for the next Prometheus scrape to reach the sink


def timing_of(stack: Stack) -> Timing:
    return getattr(stack, "timing", None) or Timing()


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
        raise ExpectationFailed("GATEWAY_ERRORS", f"need {minimum} successful requests: {traffic.describe()}")


# ---------------------------------------------------------------------------------------------------- traces

def wait_for_trace_of_request(stack: Stack, request_id: str, path: Sequence[str]) -> expect_traces.TraceTree:
    """The trace whose Kong root carries ``request_id``, once its span count settles (or the path is complete)."""
    timing = timing_of(stack)

    def kong_root() -> Mapping[str, Any] | None:
        return expect_traces.kong_root_for_request(stack.sink.spans(name="kong"), request_id)

    try:
        root = poll_until(kong_root, lambda r: r is not None, what=f"the Kong root span of request {request_id}",
                          timeout=timing.signal, interval=0.3)
    except WaitTimeout as exc:
        raise ExpectationFailed("NO_TRACE", f"no trace reached the sink for request {request_id}",
                                f"{exc}\n{_pipeline_state(stack)}") from exc
    assert root is not None
    trace_id = root["trace_id"]
    state = {"count": -1, "since": time.monotonic()}

    def spans() -> list[Mapping[str, Any]]:
        return list(stack.sink.spans(trace_id=trace_id))

    def complete(current: list[Mapping[str, Any]]) -> bool:
        now = time.monotonic()
        if len(current) != state["count"]:
            state["count"], state["since"] = len(current), now
        quiet = now - state["since"]
        try:
            expect_traces.assert_service_path(expect_traces.TraceTree(current), path)
            path_ok = True
        except ExpectationFailed:
            path_ok = False
        return (path_ok and quiet >= 1.0) or quiet >= timing.settle

    try:
        final = poll_until(spans, complete, what=f"trace {trace_id} to settle", timeout=timing.signal, interval=0.3)
    except WaitTimeout as exc:
        final = list(exc.last) if isinstance(exc.last, list) else []
    return expect_traces.TraceTree(final)


def check_trace_spans_services(
    stack: Stack, path: Sequence[str] = (KONG_SERVICE, "coupon", "membership"), url_path: str = COUPON_PATH,
) -> expect_traces.TraceTree:
    """One request through Kong yields ONE trace: kong-otel -> coupon -> membership, each hop parent-linked, the
    first upstream SERVER span a child of ``kong.balancer``, no missing parents."""
    traffic = send(stack.gateway_url, url_path)
    require_ok(traffic, 1)
    tree = wait_for_trace_of_request(stack, traffic.request_ids[0], path)
    expect_traces.assert_one_trace(tree)
    expect_traces.assert_kinds(tree, {"kong": "SERVER", "kong.balancer": "CLIENT"})
    hops = expect_traces.assert_service_path(tree, path)
    expect_traces.assert_parent(tree, hops[1], "kong.balancer")
    expect_traces.assert_complete(tree)
    return tree


# --------------------------------------------------------------------------------------------------- metrics

def _kong_points(stack: Stack) -> list[Mapping[str, Any]]:
    return [p for p in stack.sink.metric_points() if str(p["name"]).startswith("kong_")]


def wait_for_scrape_after(stack: Stack, after_ns: int, what: str) -> int:
    """Wait until a Kong scrape taken after ``after_ns`` reached the sink (or was rejected); return its time."""
    timing = timing_of(stack)

    def observe() -> tuple[int, int]:
        times = [int(p["time_unix_nano"]) for p in _kong_points(stack) if int(p["time_unix_nano"]) > after_ns]
        rejected = [r for r in stack.sink.rejections(signal="metrics") if float(r.get("at", 0)) * 1e9 > after_ns]
        return (min(times) if times else 0, len(rejected))

    try:
        first, _rejected = poll_until(observe, lambda o: o[0] > 0 or o[1] > 0, what=what, timeout=timing.scrape,
                                     interval=0.5)
    except WaitTimeout as exc:
        raise ExpectationFailed("NO_METRICS", f"no Kong metrics reached the sink ({what})",
                                f"{exc}\n{_pipeline_state(stack)}") from exc
    expect_metrics.assert_no_rejections(rejections_since(stack, after_ns), "metrics")
    return first


def rejections_since(stack: Stack, after_ns: int) -> list[Mapping[str, Any]]:
    """Rejections the sink recorded after ``after_ns`` (earlier ones belong to earlier checks)."""
    return [r for r in stack.sink.rejections() if float(r.get("at", 0)) * 1e9 >= after_ns]


def check_metrics_delta_and_counts(
    stack: Stack, requests: int = 20, url_path: str = PRICING_PATH, route: str = "pricing-route",
) -> list[Mapping[str, Any]]:
    """Kong's metrics reach the backend as DELTA, nothing is rejected, and the request counter and the latency
    histogram count exactly the requests sent, with ``kong.deployment.name`` on every point."""
    timing = timing_of(stack)
    started = now_ns()
    baseline = wait_for_scrape_after(stack, started, "a scrape before the traffic")
    traffic = send(stack.gateway_url, url_path, requests)
    require_ok(traffic, requests)
    # Kong syncs worker counters to shared memory every second: wait for a scrape clearly after the traffic
    wait_for_scrape_after(stack, traffic.ended_ns + 1_100_000_000, "a scrape after the traffic")
    points = _kong_points(stack)
    expect_metrics.assert_all_delta(points)
    counter = expect_metrics.select(points, REQUEST_COUNTER, baseline, route=route)
    if not counter:
        names = sorted({p["name"] for p in points})
        raise ExpectationFailed("MISSING_METRIC", f"no {REQUEST_COUNTER} points for route {route!r} after the "
                                f"traffic (is status_code_metrics on?)", f"Kong metrics seen: {names}")
    for name, field in ((REQUEST_COUNTER, "value"), (LATENCY_HISTOGRAM, "count")):
        with contextlib.suppress(WaitTimeout):  # the exact comparison below reports a shortfall
            expect_metrics.wait_window_total(lambda: _kong_points(stack), name, requests, field, baseline,
                                             timing.scrape, route=route)
        selected = expect_metrics.select(_kong_points(stack), name, baseline, route=route)
        if name == REQUEST_COUNTER:
            selected = [p for p in selected if p["attributes"].get("code") == "200"]
            if expect_metrics.delta_total(selected, field) == 0:
                raise ExpectationFailed("NOT_COUNTED", f"{requests} requests sent, {REQUEST_COUNTER}{{route={route}}} "
                                        "counted none (is status_code_metrics on?)",
                                        expect_metrics.describe_points(selected))
        expect_metrics.assert_count(selected, requests, field, f"{name}{{route={route}}}")
    final = _kong_points(stack)
    # windows are checked inside this claim's own window: a collector restart (an earlier control) legitimately
    # starts a new delta series
    expect_metrics.assert_contiguous_windows(expect_metrics.select(final, REQUEST_COUNTER, baseline - 1, route=route))
    expect_metrics.assert_attribute_everywhere(final, "kong.deployment.name",
                                               getattr(stack, "kong_deployment_name", None))
    expect_metrics.assert_no_rejections(rejections_since(stack, started), "metrics")
    return final


# ------------------------------------------------------------------------------------------------------ logs

def _sampled(record: Mapping[str, Any]) -> bool | None:
    """Whether Kong sampled the request, from the traceparent it injected upstream (None when absent)."""
    match = TRACEPARENT.match(str(expect_logs.attribute(record, "request.headers.traceparent", "")))
    return None if match is None else match.group(3) == "01"


def check_access_logs(stack: Stack, requests: int = 10, url_path: str = COUPON_PATH) -> list[Mapping[str, Any]]:
    """Every Kong access log of the traffic arrives once, with a clean 32-hex trace_id equal to the LogRecord
    trace id, and each sampled request's log joins the stored trace with the same request id."""
    timing = timing_of(stack)
    traffic = send(stack.gateway_url, url_path, requests)
    require_ok(traffic, requests)
    wanted = set(traffic.request_ids)

    def ours() -> list[Mapping[str, Any]]:
        return [r for r in expect_logs.kong_access_logs(stack.sink.logs()) if expect_logs.request_id(r) in wanted]

    try:
        records = poll_until(ours, lambda rs: len(rs) >= len(wanted), what=f"{len(wanted)} Kong access logs",
                             timeout=timing.signal, interval=0.3)
    except WaitTimeout as exc:
        records = list(exc.last) if isinstance(exc.last, list) else []
        if not records:
            raise ExpectationFailed("NO_LOGS", f"none of {len(wanted)} access logs reached the sink",
                                    f"{exc}\n{_pipeline_state(stack)}") from exc
    expect_logs.assert_one_record_per_request(records, traffic.request_ids)
    expect_logs.assert_clean_trace_ids(records, min_records=requests)
    sampled = [r for r in records if _sampled(r) is not False]
    if sampled:
        trace_ids = {str(r["trace_id"]) for r in sampled}

        def roots() -> list[Mapping[str, Any]]:
            return [s for s in stack.sink.spans(name="kong") if s["trace_id"] in trace_ids]

        with contextlib.suppress(WaitTimeout):
            poll_until(roots, lambda rs: len(rs) >= len(trace_ids), what="the traces of the logged requests",
                       timeout=timing.signal, interval=0.3)
        expect_logs.assert_joins_traces(sampled, roots())
    return records


# -------------------------------------------------------------------------------------------------- sampling

def count_traced(stack: Stack, traffic: Traffic) -> int:
    """How many of the traffic's requests have a Kong root span at the sink, once the pipeline has flushed.

    Flushed means: every access log of the traffic arrived (same collector, so the pipeline is moving), then the
    number of traced requests stayed unchanged for ``settle`` seconds (Kong's queue coalesces for ~1 s).
    """
    timing = timing_of(stack)
    wanted = set(traffic.request_ids)
    with contextlib.suppress(WaitTimeout):
        poll_until(lambda: [r for r in expect_logs.kong_access_logs(stack.sink.logs())
                            if expect_logs.request_id(r) in wanted],
                   lambda rs: len(rs) >= len(wanted), what="the access logs of the sampling traffic",
                   timeout=timing.signal, interval=0.5)

    def traced() -> int:
        return sum(1 for s in stack.sink.spans(name="kong")
                   if s.get("attributes", {}).get("kong.request.id") in wanted)

    from otelgate.waiting import wait_stable

    return wait_stable(traced, what="the traced count to settle", timeout=timing.signal, quiet=timing.settle / 2)


def sampled_traceparents(trace_ids: Sequence[str]) -> list[dict[str, str]]:
    """One incoming W3C context per trace id, flagged sampled (Kong 3.8+ still runs its ratio sampler on it)."""
    return [{"traceparent": f"00-{tid}-{'1' * 16}-01"} for tid in trace_ids]


def check_sampling_rate(stack: Stack, rate: float, requests: int = 200, url_path: str = PRICING_PATH,
                        trace_ids: Sequence[str] | None = None) -> expect_sampling.Fraction:
    """At Kong sampling rate ``rate``, the traced fraction of ``requests`` is consistent with ``rate`` (exact at
    0 and 1, else inside the 95% Wilson interval).

    With ``trace_ids`` each request carries ``traceparent: 00-<id>-...-01`` (Kong still runs its sampler on the
    incoming id); without, Kong makes up the ids.
    """
    headers = None if trace_ids is None else sampled_traceparents(trace_ids)
    traffic = send(stack.gateway_url, url_path, requests, headers_per_request=headers)
    require_ok(traffic, requests)
    return expect_sampling.assert_rate(count_traced(stack, traffic), len(traffic.request_ids), rate)


def check_deterministic_sampling(stack: Stack, rate: float, fractions: Sequence[float] = (0.05, 0.3, 0.45, 0.55,
                                                                                         0.7, 0.95)) -> None:
    """Requests carrying crafted W3C trace ids are traced exactly when Kong's sampler says so."""
    trace_ids = [expect_sampling.trace_id_with_fraction(f, tail=f"{i:016x}") for i, f in enumerate(fractions)]
    traffic = send(stack.gateway_url, PRICING_PATH, len(trace_ids), headers_per_request=sampled_traceparents(trace_ids))
    require_ok(traffic, len(trace_ids))
    count_traced(stack, traffic)
    stored = {s["trace_id"] for s in stack.sink.spans(name="kong")}
    wrong = [f"{tid}: Kong samples={expect_sampling.kong_samples(tid, rate)}, stored={tid in stored}"
             for tid in trace_ids if expect_sampling.kong_samples(tid, rate) != (tid in stored)]
    if wrong:
        raise ExpectationFailed("SAMPLING_DECISION", f"{len(wrong)} crafted trace id(s) decided unlike Kong at "
                                f"rate {rate} ({PRICING_PATH})", "\n".join(wrong))


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

ROUTE_PATHS = {"coupon-route": COUPON_PATH, "inventory-route": "/inventory", "pricing-route": PRICING_PATH}


def warm_up(stack: Stack) -> None:
    """Send one request per route and wait until all three signals arrived for them.

    Afterwards every route's Kong series exists (a later delta sum starts from a known point), the collector's
    exporters have connected, and a check that fails is not failing because the pipeline was still starting.
    """
    timing = timing_of(stack)
    request_ids: list[str] = []
    for path in ROUTE_PATHS.values():
        traffic = send(stack.gateway_url, path)
        require_ok(traffic, 1)
        request_ids += traffic.request_ids
    ended = now_ns()

    def arrived() -> dict[str, bool]:
        roots = {s.get("attributes", {}).get("kong.request.id") for s in stack.sink.spans(name="kong")}
        logged = {expect_logs.request_id(r) for r in expect_logs.kong_access_logs(stack.sink.logs())}
        routes = {p["attributes"].get("route") for p in stack.sink.metric_points(name=REQUEST_COUNTER)
                  if int(p["time_unix_nano"]) > ended + 1_100_000_000}
        return {"traces": all(r in roots for r in request_ids),
                "logs": all(r in logged for r in request_ids),
                "metrics": set(ROUTE_PATHS) <= routes}

    try:
        poll_until(arrived, lambda state: all(state.values()), what="traces, metrics and logs of the warm-up",
                   timeout=timing.signal + timing.scrape, interval=0.5)
    except WaitTimeout as exc:
        raise ExpectationFailed("WARM_UP", "the pipeline did not deliver all three signals for the warm-up "
                                "requests", f"{exc}\n{_pipeline_state(stack)}") from exc
