"""Checks the claims run beside their main assertions, each added because `otelgate mutate` found a real
misconfiguration that no claim caught (docs/mutation-report-2026-11-28.md):

- the deployment attribute the collector's ``attributes/kong`` processor inserts is on every stored span of the
  traces claim and every access log of the logs claim, not only on metric points (``MISSING_ATTRIBUTE``);
- a request arriving with a not-sampled W3C parent yields no span from any service
  (``SERVICE_IGNORES_PARENT_DECISION``);
- Kong's ``bandwidth_bytes`` deltas equal the request/response sizes of the same requests' access logs
  (``BANDWIDTH_MISMATCH``);
- the demo services deliver their own metrics as DELTA, counting the requests they served (``SERVICE_METRICS_MISSING``,
  ``SERVICE_METRICS_COUNT``), and their own log record of each request, joined by its trace id
  (``SERVICE_LOGS_MISSING``); which services export which signals is data (``[services.signals]`` in otelgate.toml).

Functions here take the stack and what the claim already observed; :mod:`otelgate.claims` calls them (never the other
way round).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otelgate import probe, topology
from otelgate.expect import logs as expect_logs
from otelgate.expect import metrics as expect_metrics
from otelgate.expect.errors import Evidence, ExpectationFailed, require
from otelgate.stacks.base import Stack
from otelgate.waiting import WaitTimeout, poll_until

Record = Mapping[str, Any]
TOPOLOGY = topology.current()


# ------------------------------------------------------------------------------------------ deployment attribute

def expected_deployment_name(stack: Stack) -> str | None:
    """The value the collector inserts on ``stack`` (None: the stack does not say; presence is still required)."""
    return getattr(stack, "kong_deployment_name", None)


def assert_deployment_attribute(records: Sequence[Record], stack: Stack, what: str, pipeline: str) -> None:
    """Every record (stored span or log record) carries the deployment attribute with the stack's value among its
    own attributes, where the collector's ``attributes`` processor puts it (it edits span/log/point attributes,
    never the resource). ``MISSING_ATTRIBUTE`` names the records without it and where else the attribute was seen."""
    key, value = TOPOLOGY.deployment_attribute, expected_deployment_name(stack)
    require(what, records)
    missing = [r for r in records if (found := expect_logs.attribute(r, key)) is None
               or (value is not None and found != value)]
    if not missing:
        return
    on_resource = sum(1 for r in missing if key in (r.get("resource") or {}))
    lines = [f"  {_label(r)}: {key}={expect_logs.attribute(r, key)!r}" for r in missing[:10]]
    raise ExpectationFailed(
        "MISSING_ATTRIBUTE", f"{len(missing)} of {len(records)} {what} lack {key}={value!r} (is the collector's "
        f"attributes processor in the {pipeline} pipeline?)", "\n".join(lines),
        Evidence(hop="collector", expected=len(records), seen=len(records) - len(missing),
                 facts={"attribute": key, "value": value, "pipeline": pipeline, "on_resource_instead": on_resource,
                        "services": sorted({str(r.get("service_name") or (r.get("resource") or {})
                                                .get("service.name")) for r in missing})}))


def _label(record: Record) -> str:
    if "span_id" in record:
        return f"span {record.get('service_name')}/{record.get('name')} {record.get('span_id')}"
    return f"log request.id={expect_logs.attribute(record, 'request.id')}"


# --------------------------------------------------------------------------------- parent's sampling decision

@dataclass(frozen=True)
class UnsampledParent:
    """An incoming W3C context whose sampled flag is 0. Kong 3.9.1 keeps it: the w3c extractor reads the flag
    (Kong/kong@3.9.1 kong/observability/tracing/propagation/extractors/w3c.lua:56-58), the opentelemetry plugin
    passes it to the sampler (kong/plugins/opentelemetry/traces.lua:44,75) and ``get_sampling_decision`` returns
    it unchanged when false (kong/pdk/tracing.lua:614-617), so Kong records nothing and injects ``-00`` upstream;
    a service under a parent-based sampler then records nothing either."""

    trace_id: str
    parent_id: str

    @classmethod
    def new(cls) -> UnsampledParent:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    @property
    def headers(self) -> dict[str, str]:
        return {"traceparent": f"00-{self.trace_id}-{self.parent_id}-00"}


def assert_parent_decision_followed(stack: Stack, parent: UnsampledParent) -> None:
    """No span of the not-sampled trace reached the sink. Called after the sampled trace sent later than it is
    complete, so its spans, had any service recorded them, would be there (same exporters, same batches)."""
    spans = list(stack.sink.spans(trace_id=parent.trace_id))
    if not spans:
        return
    services = sorted({str(s.get("service_name")) for s in spans})
    raise ExpectationFailed(
        "SERVICE_IGNORES_PARENT_DECISION", f"a request with a not-sampled parent (traceparent flags 00) produced "
        f"{len(spans)} span(s) from {', '.join(services)}: a sampler that ignores the parent's decision",
        "\n".join(f"  {s.get('service_name')}/{s.get('name')} span {s.get('span_id')}" for s in spans[:10]),
        Evidence(hop="kong -> " + services[0], expected=0, seen=len(spans),
                 facts={"trace_id": parent.trace_id, "services": services, "incoming": parent.headers["traceparent"]}))


# ---------------------------------------------------------------------------------------------------- bandwidth

# direction label -> the access-log field Kong's prometheus plugin adds for it: Kong/kong@3.9.1
# kong/plugins/prometheus/handler.lua:43-46 (egress = response.size, ingress = request.size of kong.log.serialize())
# and kong/plugins/prometheus/exporter.lua:276-292 (incremented by those sizes, label `direction`)
BANDWIDTH_FIELDS = {"ingress": "request.size", "egress": "response.size"}


def check_bandwidth(points: Sequence[Record], baseline: int, route: str, records: Sequence[Record]) -> None:
    """Per direction, the sum of ``bandwidth_bytes`` deltas for ``route`` after ``baseline`` equals the sum of the
    sizes the access logs of the same requests carry (an oracle independent of the exporter: tcp-log serializes the
    message Kong's prometheus plugin reads). ``BANDWIDTH_MISMATCH`` otherwise, with both sums."""
    name = TOPOLOGY.bandwidth_counter
    require("access logs of the metrics traffic", records)
    for direction, field_name in BANDWIDTH_FIELDS.items():
        sizes = [expect_logs.attribute(r, field_name) for r in records]
        if any(not isinstance(s, int | float) for s in sizes):
            raise ExpectationFailed("BANDWIDTH_MISMATCH", f"access logs without a numeric {field_name}: {sizes[:5]}",
                                    evidence=Evidence(facts={"field": field_name}))
        expected = int(sum(sizes))
        labels = {TOPOLOGY.route_label: route, "direction": direction}
        selected = expect_metrics.select(points, name, baseline, **labels)
        if selected:
            expect_metrics.assert_all_delta(selected)
        seen = int(expect_metrics.delta_total(selected))
        if seen != expected:
            raise ExpectationFailed(
                "BANDWIDTH_MISMATCH", f"{name}{{route={route}, direction={direction}}}: sum of deltas is {seen}, "
                f"the {len(records)} access logs' {field_name} sum to {expected}"
                + ("" if selected else " (no points: is bandwidth_metrics on?)"),
                expect_metrics.describe_points(selected),
                Evidence(expected=expected, seen=seen, facts={"metric": name, "direction": direction,
                                                              "field": field_name, "points": len(selected)}))


# ---------------------------------------------------------------------------------- the services' own metrics

def _service_points(stack: Stack, service: str) -> list[Record]:
    return [p for p in stack.sink.metric_points(name=TOPOLOGY.service_request_histogram)
            if (p.get("resource") or {}).get("service.name") == service]


def _newest(points: Sequence[Record], before_ns: int) -> int:
    return max((int(p["time_unix_nano"]) for p in points if int(p["time_unix_nano"]) < before_ns), default=0)


def quiet_since(points: Sequence[Record], route: str, baseline: int) -> int:
    """The start of the run of Kong scrape windows, ending at ``baseline``, in which the route's request counter (every
    status code) moved by 0: no request of the route ended in between, so a service window opened after it holds
    none of the requests before the traffic. ``baseline`` itself when the last window counted a request."""
    counter = [p for p in points if p["name"] == TOPOLOGY.request_counter
               and (p.get("attributes") or {}).get(TOPOLOGY.route_label) == route
               and int(p["time_unix_nano"]) <= baseline]
    since = baseline
    while True:
        window = [p for p in counter if int(p["time_unix_nano"]) == since]
        if not window or expect_metrics.delta_total(window) != 0:
            return since
        since = min(int(p["start_unix_nano"]) for p in window)


def _next_export(stack: Stack, service: str, after: int, wait: float, since_ns: int) -> int:
    """The time of ``service``'s newest export once it is after ``after``; after ``wait`` seconds, or once the sink
    refused metrics since ``since_ns``, the newest there is (the check judges what arrived)."""
    def observe() -> tuple[int, bool]:
        return _newest(_service_points(stack, service), 2**63), bool(probe.rejections_since(stack, since_ns, "metrics"))

    try:
        return poll_until(observe, lambda o: o[0] > after or o[1], what=f"{service}'s next metric export",
                          timeout=wait, interval=0.2)[0]
    except WaitTimeout as exc:
        return exc.last[0] if isinstance(exc.last, tuple) else 0


@dataclass
class ServiceMetrics:
    """The services' own request-duration histograms around one batch of traffic: :meth:`before_traffic` picks each
    service's baseline export, :meth:`check` counts the requests served after it."""

    services: tuple[str, ...]
    baselines: dict[str, int]

    @classmethod
    def before_traffic(cls, stack: Stack, route_services: Sequence[str], kong_baseline: int, started: int,
                       wait: float, before_ns: int | None = None) -> ServiceMetrics:
        """Baselines for the services of ``route_services`` that export metrics on this stack. A baseline older
        than ``kong_baseline`` (Kong's scrape before which every request of the route was counted, e.g.
        :func:`quiet_since`), or none, may hold earlier requests in the service's open window: it is replaced by the
        service's next export, waited for at most ``wait`` seconds (one comes every export interval)."""
        services = TOPOLOGY.exporting(getattr(stack, "name", ""), "metrics", route_services)  # fakes have none
        baselines: dict[str, int] = {}
        for service in services:
            newest = _newest(_service_points(stack, service), started if before_ns is None else before_ns)
            if newest < kong_baseline:
                newest = _next_export(stack, service, kong_baseline, wait, started)
            baselines[service] = newest
        return cls(services, baselines)

    def check(self, stack: Stack, requests: int, ended_ns: int, timeout: float) -> None:
        """Each service's histogram, after its baseline, is DELTA and counts exactly ``requests``; waits until each
        service exported a window ending after ``ended_ns``."""
        for service in self.services:
            baseline = self.baselines[service]

            def after(s: str = service, b: int = baseline) -> list[Record]:
                return [p for p in _service_points(stack, s) if int(p["time_unix_nano"]) > b]

            try:
                points = poll_until(after, lambda ps: any(int(p["time_unix_nano"]) > ended_ns for p in ps),
                                    what=f"{service}'s metrics after the traffic", timeout=timeout, interval=0.3)
            except WaitTimeout as exc:
                raise ExpectationFailed(
                    "SERVICE_METRICS_MISSING", f"{service} served {requests} requests, yet none of its "
                    f"{TOPOLOGY.service_request_histogram} windows after them reached the sink (is the otlp receiver "
                    "in the metrics pipeline?)", str(exc),
                    Evidence(hop=f"{service} -> collector -> sink", expected=requests, seen=0,
                             facts={"service": service, "metric": TOPOLOGY.service_request_histogram,
                                    "had_baseline": bool(baseline)})) from exc
            expect_metrics.assert_all_delta(points)
            seen = int(expect_metrics.delta_total(points, "count"))
            if seen != requests or not baseline:
                raise ExpectationFailed(
                    "SERVICE_METRICS_COUNT", f"{service}'s {TOPOLOGY.service_request_histogram} counted {seen} "
                    f"requests after its last export before the traffic, expected {requests}"
                    + ("" if baseline else " (no export before the traffic to count from)"),
                    expect_metrics.describe_points(points),
                    Evidence(expected=requests, seen=seen, facts={"service": service, "baseline": baseline}))


# ------------------------------------------------------------------------------------- the services' own logs

def _service_of(record: Record) -> str | None:
    service = (record.get("resource") or {}).get("service.name")
    return None if service is None else str(service)


def assert_service_logs(stack: Stack, access_logs: Sequence[Record], route_services: Sequence[str],
                        timeout: float) -> None:
    """Every service of ``route_services`` that exports logs on this stack delivered, for each request of
    ``access_logs`` (Kong's), a log record of its own carrying that request's trace id (the id Kong propagated:
    sampled or not, the service's log record carries the current span context's trace id). Waits at most
    ``timeout`` seconds; ``SERVICE_LOGS_MISSING`` names the services and how many requests each left unlogged."""
    services = TOPOLOGY.exporting(getattr(stack, "name", ""), "logs", route_services)
    trace_ids = {str(r.get("trace_id")) for r in access_logs if r.get("trace_id")}
    if not services:
        return
    require("access logs with a trace id", sorted(trace_ids))

    def missing() -> dict[str, int]:
        have = {(_service_of(r), str(r.get("trace_id"))) for r in stack.sink.logs()}
        gaps = {service: sum(1 for t in trace_ids if (service, t) not in have) for service in services}
        return {service: count for service, count in gaps.items() if count}

    try:
        poll_until(missing, lambda gaps: not gaps, what="the services' own log records of the requests",
                   timeout=timeout, interval=0.3)
    except WaitTimeout as exc:
        gaps = exc.last if isinstance(exc.last, dict) else {}
        raise ExpectationFailed(
            "SERVICE_LOGS_MISSING", "no own log record of " + ", ".join(f"{n} of {len(trace_ids)} requests from "
            f"{service}" for service, n in sorted(gaps.items())) + " (is the otlp receiver in the logs pipeline?)",
            str(exc),
            Evidence(hop="service -> collector -> sink", expected=len(trace_ids) * len(services),
                     seen=len(trace_ids) * len(services) - sum(gaps.values()),
                     facts={"requests_unlogged_by_service": gaps, "services": list(services)})) from exc
