"""The claims' decisions on recorded sink contents (a fake stack, no processes): conclusive evidence ends a check
early with its cause, and nothing is skipped silently (the log-to-trace join, the access logs of sampling traffic)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from otelgate import claims, sampling_claim
from otelgate.expect import kong_sampler
from otelgate.expect.errors import ExpectationFailed
from otelgate.stacks.base import StackSettings
from otelgate.traffic import Traffic

FAST = claims.Timing(signal=2.0, settle=0.6, scrape=2.0, down=0.2, service_export=0.5)
DEPLOYMENT = claims.TOPOLOGY.deployment_attribute


@dataclass
class FakeSink:
    span_records: list[dict[str, Any]] = field(default_factory=list)
    log_records: list[dict[str, Any]] = field(default_factory=list)
    rejection_records: list[dict[str, Any]] = field(default_factory=list)

    def spans(self, **filters: Any) -> list[dict[str, Any]]:
        return [s for s in self.span_records if all(s.get(k) == v for k, v in filters.items())]

    def logs(self) -> list[dict[str, Any]]:
        return list(self.log_records)

    def rejections(self, signal: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.rejection_records if signal in (None, r["signal"])]

    def stats(self) -> dict[str, Any]:
        return {"spans": len(self.span_records), "logs": len(self.log_records)}

    def metric_points(self, name: str | None = None) -> list[dict[str, Any]]:
        return []


@dataclass
class FakeStack:
    sink: FakeSink
    settings: StackSettings = field(default_factory=StackSettings)
    name: str = "fake"
    gateway_url: str = "http://gateway.invalid"
    kong_deployment_name: str = "kong-fake"
    timing: claims.Timing = FAST

    def reconfigure(self, **changes: Any) -> None:
        self.settings = self.settings.with_changes(**changes)

    def urls(self) -> dict[str, str]:
        return {}


def access_log(request_id: str, trace_id: str, sampled: bool | None) -> dict[str, Any]:
    headers = {} if sampled is None else {"traceparent": f"00-{trace_id}-{'1' * 16}-{'01' if sampled else '00'}"}
    return {"attributes": {"request": {"id": request_id, "uri": "/x", "headers": headers}, "started_at": 1,
                           "trace_id": trace_id, DEPLOYMENT: "kong-fake"}, "trace_id": trace_id}


def kong_root(request_id: str, trace_id: str) -> dict[str, Any]:
    return {"trace_id": trace_id, "span_id": "a" * 16, "parent_span_id": "", "service_name": claims.KONG_SERVICE,
            "name": "kong", "kind": "SERVER", "start_unix_nano": 0, "end_unix_nano": 1,
            "attributes": {"kong.request.id": request_id, DEPLOYMENT: "kong-fake"}}


def fake_send(request_ids: Sequence[str]) -> Callable[..., Traffic]:
    def send(gateway_url: str, path: str, count: int = 1, **_: Any) -> Traffic:
        traffic = Traffic(path=path, started_ns=time.time_ns())
        traffic.request_ids = list(request_ids[:count])
        traffic.statuses = [200] * count
        traffic.ended_ns = time.time_ns()
        return traffic

    return send


def trace_ids(count: int, seed: int) -> list[str]:
    generator = random.Random(seed)
    return [f"{generator.getrandbits(128):032x}" for _ in range(count)]


def test_the_log_join_must_run_when_the_rate_is_above_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"r{i}" for i in range(3)]
    sink = FakeSink(log_records=[access_log(r, t, sampled=False) for r, t in zip(ids, trace_ids(3, 1), strict=True)])
    monkeypatch.setattr(claims, "send", fake_send(ids))
    stack = FakeStack(sink, StackSettings(sampling_rate=0.5))
    with pytest.raises(ExpectationFailed) as err:
        claims.check_access_logs(stack, requests=3)  # type: ignore[arg-type]
    assert err.value.cause == "JOIN_NOT_RUN" and err.value.evidence.facts["rate_in_force"] == 0.5
    stack.settings = StackSettings(sampling_rate=0.0)  # at rate 0 there is nothing to join: the claim holds
    assert len(claims.check_access_logs(stack, requests=3)) == 3  # type: ignore[arg-type]


def test_a_trace_kong_did_not_sample_is_concluded_at_once_from_its_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FakeSink(log_records=[access_log("r0", trace_ids(1, 2)[0], sampled=False)])
    monkeypatch.setattr(claims, "send", fake_send(["r0"]))
    began = time.monotonic()
    with pytest.raises(ExpectationFailed) as err:
        claims.check_trace_spans_services(FakeStack(sink))  # type: ignore[arg-type]
    assert err.value.cause == "NOT_SAMPLED" and err.value.evidence.facts["access_log_arrived"] is True
    assert time.monotonic() - began < 1.0, "a conclusive access log must end the wait, not the timeout"


def test_a_refusal_at_the_sink_ends_the_trace_check_with_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FakeSink(rejection_records=[{"signal": "traces", "http_status": 401, "reason": "UNAUTHENTICATED",
                                        "message": "Token Authentication failed", "at": time.time() + 1}])
    monkeypatch.setattr(claims, "send", fake_send(["r0"]))
    with pytest.raises(ExpectationFailed) as err:
        claims.check_trace_spans_services(FakeStack(sink))  # type: ignore[arg-type]
    assert err.value.cause == "SINK_REJECTIONS"
    assert [(r.http_status, r.message) for r in err.value.evidence.rejections] == [(401, "Token Authentication failed")]


def test_no_evidence_at_all_is_no_trace_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "send", fake_send(["r0"]))
    with pytest.raises(ExpectationFailed) as err:
        claims.check_trace_spans_services(FakeStack(FakeSink()))  # type: ignore[arg-type]
    assert err.value.cause == "NO_TRACE" and err.value.evidence.facts["access_log_arrived"] is False


def test_missing_access_logs_fail_the_sampling_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"r{i}" for i in range(20)]
    monkeypatch.setattr(sampling_claim, "send", fake_send(ids))
    with pytest.raises(ExpectationFailed) as err:
        sampling_claim.check_sampling_decisions(FakeStack(FakeSink()), 0.5, 20)  # type: ignore[arg-type]
    assert err.value.cause == "NO_LOGS" and err.value.evidence.expected == 20 and err.value.evidence.seen == 0


def recorded_stack(rate: float, decide: Callable[[str, float], bool], count: int = 60) -> tuple[FakeStack, list[str]]:
    ids = [f"r{i}" for i in range(count)]
    tids = trace_ids(count, 3)
    sink = FakeSink(log_records=[access_log(r, t, None) for r, t in zip(ids, tids, strict=True)],
                    span_records=[kong_root(r, t) for r, t in zip(ids, tids, strict=True) if decide(t, rate)])
    return FakeStack(sink, StackSettings(sampling_rate=rate)), ids


def test_the_sampling_claim_passes_kong_s_decisions_and_names_the_mismatches_of_a_wrong_sampler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stack, ids = recorded_stack(0.5, kong_sampler.kong_decides)
    monkeypatch.setattr(sampling_claim, "send", fake_send(ids))
    report = sampling_claim.check_sampling_decisions(stack, 0.5, len(ids))  # type: ignore[arg-type]
    assert report.traced == report.expected_traced > 0

    def inverted(tid: str, rate: float) -> bool:
        return kong_sampler.trace_id_head(tid) >= (1 - rate) * 2**64

    stack, ids = recorded_stack(0.5, inverted)
    with pytest.raises(ExpectationFailed) as err:
        sampling_claim.check_sampling_decisions(stack, 0.5, len(ids))  # type: ignore[arg-type]
    assert err.value.cause == "SAMPLING_DECISION"
    first = err.value.evidence.facts["first_mismatched_trace_ids"][0]
    assert first in err.value.details and "at rate 0.5" in err.value.details


# --- checks added because `otelgate mutate` found survivors (docs/mutation-report-2026-11-28.md) -----------------

def whole_trace(request_id: str, trace_id: str, deployment: str | None = "kong-fake") -> list[dict[str, Any]]:
    """Kong -> coupon -> membership, every span parent-linked, the deployment attribute on each unless None."""
    kong = claims.KONG_SERVICE
    chain = [("a", "", kong, "kong", "SERVER"), ("b", "a", kong, "kong.balancer", "CLIENT"),
             ("c", "b", "coupon", "GET /coupons", "SERVER"), ("d", "c", "coupon", "GET", "CLIENT"),
             ("e", "d", "membership", "GET /isMember", "SERVER")]
    spans = []
    for index, (span_id, parent, service, name, kind) in enumerate(chain):
        attributes: dict[str, Any] = {"kong.request.id": request_id} if name == "kong" else {}
        if deployment is not None:
            attributes[DEPLOYMENT] = deployment
        spans.append({"trace_id": trace_id, "span_id": span_id * 16, "parent_span_id": parent * 16 if parent else "",
                      "service_name": service, "name": name, "kind": kind, "start_unix_nano": index,
                      "end_unix_nano": index + 10, "attributes": attributes,
                      "resource": {"service.name": service,
                                   **({DEPLOYMENT: "kong-fake"} if deployment is None else {})}})
    return spans


def test_the_traces_claim_passes_a_whole_trace_with_the_deployment_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FakeSink(span_records=whole_trace("r0", trace_ids(1, 5)[0]))
    monkeypatch.setattr(claims, "send", fake_send(["r0"]))
    tree = claims.check_trace_spans_services(FakeStack(sink))  # type: ignore[arg-type]
    assert len(tree.spans) == 5


def test_spans_without_the_deployment_attribute_fail_the_traces_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    """attributes/kong removed from the traces pipeline: the old claim passed this trace."""
    sink = FakeSink(span_records=whole_trace("r0", trace_ids(1, 6)[0], deployment=None))
    monkeypatch.setattr(claims, "send", fake_send(["r0"]))
    with pytest.raises(ExpectationFailed) as err:
        claims.check_trace_spans_services(FakeStack(sink))  # type: ignore[arg-type]
    facts = err.value.evidence.facts
    assert err.value.cause == "MISSING_ATTRIBUTE" and facts["pipeline"] == "traces", err.value
    assert facts["on_resource_instead"] == 5 and err.value.evidence.seen == 0
    assert facts["services"] == sorted({claims.KONG_SERVICE, "coupon", "membership"})


def test_a_wrong_deployment_name_on_spans_fails_too(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FakeSink(span_records=whole_trace("r0", trace_ids(1, 7)[0], deployment="kong-kind"))
    monkeypatch.setattr(claims, "send", fake_send(["r0"]))
    with pytest.raises(ExpectationFailed) as err:
        claims.check_trace_spans_services(FakeStack(sink))  # type: ignore[arg-type]
    assert err.value.cause == "MISSING_ATTRIBUTE" and err.value.evidence.facts["value"] == "kong-fake"


def test_access_logs_without_the_deployment_attribute_fail_the_logs_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    """attributes/kong removed from the logs pipeline: the old claim passed these records (rate 0: no join)."""
    ids = [f"r{i}" for i in range(3)]
    records = [access_log(r, t, sampled=False) for r, t in zip(ids, trace_ids(3, 8), strict=True)]
    del records[1]["attributes"][DEPLOYMENT]
    monkeypatch.setattr(claims, "send", fake_send(ids))
    with pytest.raises(ExpectationFailed) as err:
        claims.check_access_logs(FakeStack(FakeSink(log_records=records), StackSettings(sampling_rate=0.0)),  # type: ignore[arg-type]
                                 requests=3)
    assert err.value.cause == "MISSING_ATTRIBUTE" and err.value.evidence.facts["pipeline"] == "logs"
    assert (err.value.evidence.expected, err.value.evidence.seen) == (3, 2) and "request.id=r1" in err.value.details


def test_a_service_that_records_a_not_sampled_parent_fails_the_traces_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Instrumentation's sampler changed to traceidratio (ignores the parent): coupon records the request Kong
    forwarded with flags 00. The old claim never sent such a request. Kong keeps an incoming not-sampled flag
    (Kong/kong@3.9.1 kong/observability/tracing/propagation/extractors/w3c.lua:56-58,
    kong/plugins/opentelemetry/traces.lua:44,75, kong/pdk/tracing.lua:614-617), and so does the simulator
    (otelgate/kongsim/propagation.py sampling_decision)."""
    sink = FakeSink(span_records=whole_trace("r0", trace_ids(1, 9)[0]))
    sent = fake_send(["r0"])
    incoming: list[str] = []

    def send(gateway_url: str, path: str, count: int = 1, **options: Any) -> Traffic:
        for headers in options.get("headers_per_request") or []:
            incoming.append(headers["traceparent"])
            _, trace_id, _, flags = headers["traceparent"].split("-")
            assert flags == "00"
            sink.span_records.append({"trace_id": trace_id, "span_id": "f" * 16, "parent_span_id": "1" * 16,
                                      "service_name": "coupon", "name": "GET /coupons", "kind": "SERVER",
                                      "start_unix_nano": 0, "end_unix_nano": 1,
                                      "attributes": {DEPLOYMENT: "kong-fake"}})
        return sent(gateway_url, path, count)

    monkeypatch.setattr(claims, "send", send)
    with pytest.raises(ExpectationFailed) as err:
        claims.check_trace_spans_services(FakeStack(sink))  # type: ignore[arg-type]
    assert err.value.cause == "SERVICE_IGNORES_PARENT_DECISION", err.value
    assert err.value.evidence.facts["services"] == ["coupon"] and len(incoming) == 1
    assert err.value.evidence.facts["incoming"] == incoming[0]


def bandwidth_point(direction: str, value: int, end: int, route: str = "pricing-route") -> dict[str, Any]:
    return {"name": claims.TOPOLOGY.bandwidth_counter, "type": "sum", "monotonic": True, "temporality": "DELTA",
            "value": value, "start_unix_nano": end - 5, "time_unix_nano": end,
            "attributes": {claims.ROUTE_LABEL: route, "direction": direction}}


def sized_log(request_id: str, request_size: int, response_size: int) -> dict[str, Any]:
    return {"attributes": {"request.id": request_id, "request.size": request_size, "response.size": response_size,
                           "started_at": 1}}


def test_bandwidth_deltas_must_equal_the_access_logs_sizes() -> None:
    """bandwidth_metrics: false survived: nothing read kong_bandwidth_bytes. The oracle: Kong's prometheus plugin adds
    the serialized message's request.size (ingress) and response.size (egress) (Kong/kong@3.9.1
    kong/plugins/prometheus/handler.lua:43-46, incremented in kong/plugins/prometheus/exporter.lua:276-292), the same
    message tcp-log sends as the access log."""
    from otelgate import claims_services

    records = [sized_log("r0", 100, 300), sized_log("r1", 110, 310)]
    points = [bandwidth_point("ingress", 999, 10), bandwidth_point("ingress", 150, 20),
              bandwidth_point("ingress", 60, 30), bandwidth_point("egress", 610, 30),
              bandwidth_point("egress", 7, 30, route="coupon-route")]
    claims_services.check_bandwidth(points, 10, "pricing-route", records)  # the point at the baseline is before it
    with pytest.raises(ExpectationFailed) as err:
        claims_services.check_bandwidth(points[:3], 10, "pricing-route", records)
    assert err.value.cause == "BANDWIDTH_MISMATCH" and err.value.evidence.facts["direction"] == "egress"
    assert (err.value.evidence.expected, err.value.evidence.seen) == (610, 0) and "bandwidth_metrics" in str(err.value)
    with pytest.raises(ExpectationFailed) as err:
        claims_services.check_bandwidth(points[1:], 10, "pricing-route", [*records, sized_log("r2", 1, 1)])
    assert err.value.cause == "BANDWIDTH_MISMATCH" and err.value.evidence.expected == 211


def service_point(service: str, count: int, end: int) -> dict[str, Any]:
    return {"name": claims.TOPOLOGY.service_request_histogram, "type": "histogram", "temporality": "DELTA",
            "count": count, "start_unix_nano": end - 2, "time_unix_nano": end, "attributes": {"http.target": "/price"},
            "resource": {"service.name": service}}


@dataclass
class MetricSink(FakeSink):
    points: list[dict[str, Any]] = field(default_factory=list)

    def metric_points(self, name: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.points if name in (None, p["name"])]


def test_topology_declares_which_services_export_metrics() -> None:
    assert claims.TOPOLOGY.exporting("local", "metrics", ("coupon", "pricing")) == ("coupon", "pricing")
    assert claims.TOPOLOGY.exporting("kind", "metrics", ("membership",)) == ()
    assert claims.TOPOLOGY.exporting("kind", "traces", ("membership",)) == ("membership",)


def test_the_services_own_metrics_must_count_the_requests_they_served() -> None:
    """The otlp receiver removed from the metrics pipeline survived: nothing read the services' own metrics."""
    from otelgate import claims_services

    sink = MetricSink(points=[service_point("pricing", 1, 100), service_point("pricing", 20, 200),
                              service_point("coupon", 5, 200)])
    stack = FakeStack(sink, name="local")
    watch = claims_services.ServiceMetrics.before_traffic(stack, ("pricing",), 50, 150, 0.1)  # type: ignore[arg-type]
    assert watch.baselines == {"pricing": 100}
    watch.check(stack, 20, 190, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ExpectationFailed) as err:
        watch.check(stack, 21, 190, 0.5)  # type: ignore[arg-type]
    assert err.value.cause == "SERVICE_METRICS_COUNT" and err.value.evidence.seen == 20
    sink.points = [p for p in sink.points if p["resource"]["service.name"] != "pricing"]  # receiver gone
    with pytest.raises(ExpectationFailed) as err:
        watch.check(stack, 20, 190, 0.5)  # type: ignore[arg-type]
    assert err.value.cause == "SERVICE_METRICS_MISSING" and err.value.evidence.facts["service"] == "pricing"
    cumulative = MetricSink(points=[service_point("pricing", 1, 100), {**service_point("pricing", 21, 200),
                                                                       "temporality": "CUMULATIVE"}])
    with pytest.raises(ExpectationFailed) as err:
        watch.check(FakeStack(cumulative, name="local"), 20, 190, 0.5)  # type: ignore[arg-type]
    assert err.value.cause == "CUMULATIVE_POINTS"
    assert claims_services.ServiceMetrics.before_traffic(FakeStack(sink, name="kind"),  # type: ignore[arg-type]
                                                         ("pricing",), 50, 150, 0.1).services == ()


def service_log(service: str, trace_id: str) -> dict[str, Any]:
    return {"body": "GET /coupons -> 200", "attributes": {}, "trace_id": trace_id,
            "resource": {"service.name": service}}


def test_each_service_on_the_route_must_deliver_its_own_log_of_each_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The otlp receiver removed from the logs pipeline: only Kong's access logs (tcp_log) arrive; the old claim
    passed."""
    ids, tids = [f"r{i}" for i in range(3)], trace_ids(3, 10)
    kong_logs = [access_log(r, t, sampled=False) for r, t in zip(ids, tids, strict=True)]
    monkeypatch.setattr(claims, "send", fake_send(ids))
    stack = FakeStack(FakeSink(log_records=list(kong_logs)), StackSettings(sampling_rate=0.0), name="local")
    with pytest.raises(ExpectationFailed) as err:
        claims.check_access_logs(stack, requests=3)  # type: ignore[arg-type]
    assert err.value.cause == "SERVICE_LOGS_MISSING", err.value
    assert err.value.evidence.facts["requests_unlogged_by_service"] == {"coupon": 3, "membership": 3}
    stack.sink.log_records += [service_log(s, t) for s in ("coupon", "membership") for t in tids[:2]]
    stack.sink.log_records.append(service_log("coupon", tids[2]))
    with pytest.raises(ExpectationFailed) as err:
        claims.check_access_logs(stack, requests=3)  # type: ignore[arg-type]
    assert err.value.evidence.facts["requests_unlogged_by_service"] == {"membership": 1}
    assert (err.value.evidence.expected, err.value.evidence.seen) == (6, 5)
    stack.sink.log_records.append(service_log("membership", tids[2]))
    assert len(claims.check_access_logs(stack, requests=3)) == 3  # type: ignore[arg-type]
    assert claims.TOPOLOGY.exporting("kind", "logs", ("coupon", "membership")) == ()


def counter_point(value: int, start: int, end: int, code: str = "200", route: str = "pricing-route") -> dict[str, Any]:
    return {"name": claims.REQUEST_COUNTER, "type": "sum", "monotonic": True, "temporality": "DELTA", "value": value,
            "start_unix_nano": start, "time_unix_nano": end, "attributes": {claims.ROUTE_LABEL: route, "code": code}}


def test_a_service_baseline_needs_no_wait_once_kong_saw_the_route_quiet() -> None:
    """The services' baseline may precede Kong's when Kong's last windows counted no request of the route."""
    from otelgate import claims_services

    points = [counter_point(1, 0, 5), counter_point(0, 5, 10), counter_point(0, 5, 10, "500"),
              counter_point(0, 10, 15), counter_point(3, 10, 15, route="coupon-route")]
    assert claims_services.quiet_since(points, "pricing-route", 15) == 5
    assert claims_services.quiet_since([*points, counter_point(1, 10, 15, "500")], "pricing-route", 15) == 15
    assert claims_services.quiet_since(points, "pricing-route", 5) == 5
    sink = MetricSink(points=[service_point("pricing", 1, 7)])
    started = time.monotonic()
    watch = claims_services.ServiceMetrics.before_traffic(FakeStack(sink, name="local"),  # type: ignore[arg-type]
                                                          ("pricing",), 5, 100, 2.0)
    assert watch.baselines == {"pricing": 7} and time.monotonic() - started < 0.5
