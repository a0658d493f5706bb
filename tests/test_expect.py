"""Unit tests of the assertion library: each assertion passes on good data, fails with its cause on bad data, and
refuses empty data."""

from __future__ import annotations

from typing import Any

import pytest

from otelgate.expect import logs, metrics, sampling, traces
from otelgate.expect.errors import ExpectationFailed, NotEnoughData
from otelgate.expect.kong_sampler import kong_decides

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def span(span_id: str, parent: str, service: str, name: str, kind: str, start: int = 0, **attrs: Any) -> dict:
    return {"trace_id": TRACE, "span_id": span_id, "parent_span_id": parent, "service_name": service,
            "name": name, "kind": kind, "start_unix_nano": start, "end_unix_nano": start + 1000,
            "attributes": attrs}


def kong_coupon_membership() -> list[dict]:
    return [
        span("a" * 16, "", "kong-otel", "kong", "SERVER", 0, **{"kong.request.id": "r1"}),
        span("b" * 16, "a" * 16, "kong-otel", "kong.balancer", "CLIENT", 1),
        span("c" * 16, "b" * 16, "coupon", "GET /coupons", "SERVER", 2),
        span("d" * 16, "c" * 16, "coupon", "GET", "CLIENT", 3),
        span("e" * 16, "d" * 16, "membership", "GET /isMember", "SERVER", 4),
    ]


def test_service_path_holds_for_a_linked_chain() -> None:
    tree = traces.TraceTree(kong_coupon_membership())
    hops = traces.assert_service_path(tree, ["kong-otel", "coupon", "membership"])
    assert [h["service_name"] for h in hops] == ["kong-otel", "coupon", "membership"]
    traces.assert_parent(tree, hops[1], "kong.balancer")
    traces.assert_complete(tree)
    traces.assert_one_trace(tree)


def test_service_path_breaks_when_a_hop_starts_its_own_trace() -> None:
    spans = kong_coupon_membership()
    spans[2] = {**spans[2], "parent_span_id": ""}  # coupon did not get a traceparent
    with pytest.raises(ExpectationFailed) as err:
        traces.assert_service_path(traces.TraceTree(spans), ["kong-otel", "coupon", "membership"])
    assert err.value.cause == "BROKEN_PATH"
    assert "kong.balancer" in str(err.value)  # the tree is printed


def test_completeness_names_the_missing_parent() -> None:
    spans = [s for s in kong_coupon_membership() if s["name"] != "GET"]
    with pytest.raises(ExpectationFailed) as err:
        traces.assert_complete(traces.TraceTree(spans))
    assert err.value.cause == "MISSING_PARENT" and "d" * 16 in err.value.message
    traces.assert_complete(traces.TraceTree(spans), external_parents=["d" * 16])


def test_trace_checks_refuse_empty_data() -> None:
    with pytest.raises(NotEnoughData):
        traces.assert_complete(traces.TraceTree([]))


def point(value: float, start: int, end: int, temporality: str = "DELTA", **attrs: Any) -> dict:
    return {"name": "kong_http_requests_total", "type": "sum", "temporality": temporality, "monotonic": True,
            "attributes": {"route": "r", "code": "200", **attrs}, "resource": {}, "value": value,
            "start_unix_nano": start, "time_unix_nano": end}


def test_delta_points_with_contiguous_windows_count_requests() -> None:
    points = [point(3, 0, 10), point(2, 10, 20), point(0, 20, 30)]
    metrics.assert_all_delta(points)
    metrics.assert_contiguous_windows(points)
    metrics.assert_count(points, 5, "value", "requests")
    with pytest.raises(ExpectationFailed) as err:
        metrics.assert_count(points, 6, "value", "requests")
    assert err.value.cause == "COUNT_MISMATCH"


def test_cumulative_points_fail_with_their_cause() -> None:
    with pytest.raises(ExpectationFailed) as err:
        metrics.assert_all_delta([point(3, 0, 10), point(5, 0, 20, "CUMULATIVE")])
    assert err.value.cause == "CUMULATIVE_POINTS"


@pytest.mark.parametrize(("second", "word"), [((5, 20), "overlap"), ((12, 20), "gap")])
def test_windows_that_overlap_or_leave_gaps_fail(second: tuple[int, int], word: str) -> None:
    with pytest.raises(ExpectationFailed) as err:
        metrics.assert_contiguous_windows([point(1, 0, 10), point(1, *second)])
    assert err.value.cause == "WINDOWS_NOT_CONTIGUOUS" and word in err.value.details


def test_metric_checks_refuse_empty_data() -> None:
    with pytest.raises(NotEnoughData):
        metrics.assert_all_delta([])
    with pytest.raises(NotEnoughData):
        metrics.assert_attribute_everywhere([], "kong.deployment.name")


def test_rejections_fail_the_metrics_claim() -> None:
    metrics.assert_no_rejections([])
    with pytest.raises(ExpectationFailed) as err:
        metrics.assert_no_rejections([{"signal": "metrics", "http_status": 200, "reason": "X", "message": "m"}])
    assert err.value.cause == "SINK_REJECTIONS"


def access_log(trace_id: Any, record_trace_id: str, request_id: str = "r1") -> dict:
    return {"attributes": {"request": {"id": request_id, "uri": "/coupon/coupons"}, "started_at": 1,
                           "trace_id": trace_id}, "trace_id": record_trace_id}


@pytest.mark.parametrize(("value", "cause"), [
    ({"w3c": TRACE}, "WRAPPED_TRACE_ID"),
    (TRACE.upper(), "UNCLEAN_TRACE_ID"),
    ("0" * 32, "UNCLEAN_TRACE_ID"),
    ("w3c:" + TRACE, "UNCLEAN_TRACE_ID"),
    (None, "UNCLEAN_TRACE_ID"),
])
def test_unclean_trace_ids_fail(value: Any, cause: str) -> None:
    with pytest.raises(ExpectationFailed) as err:
        logs.assert_clean_trace_ids([access_log(value, TRACE)])
    assert err.value.cause == cause


def test_clean_trace_id_must_equal_the_log_record_field_and_join_a_trace() -> None:
    logs.assert_clean_trace_ids([access_log(TRACE, TRACE)])
    with pytest.raises(ExpectationFailed):
        logs.assert_clean_trace_ids([access_log(TRACE, "")])
    roots = [span("a" * 16, "", "kong-otel", "kong", "SERVER", **{"kong.request.id": "r1"})]
    logs.assert_joins_traces([access_log(TRACE, TRACE)], roots)
    with pytest.raises(ExpectationFailed) as err:
        logs.assert_joins_traces([access_log(TRACE, TRACE, request_id="other")], roots)
    assert err.value.cause == "LOG_TRACE_JOIN"


def test_log_counts_find_missing_and_duplicated_records() -> None:
    records = [access_log(TRACE, TRACE, "r1"), access_log(TRACE, TRACE, "r1")]
    with pytest.raises(ExpectationFailed) as err:
        logs.assert_one_record_per_request(records, ["r1", "r2"])
    assert err.value.cause == "LOG_COUNT_MISMATCH" and "r2" in err.value.details


def test_wilson_interval_is_exact_at_the_edges_and_contains_the_truth() -> None:
    low, high = sampling.wilson_interval(0, 100)
    assert low == 0 and 0 < high < 0.05
    low, high = sampling.wilson_interval(100, 100)
    assert high == 1 and 0.95 < low < 1
    low, high = sampling.wilson_interval(50, 100)
    assert low < 0.5 < high and high - low < 0.2


def test_sampling_rate_checks() -> None:
    sampling.assert_rate(100, 200, 0.5)
    sampling.assert_rate(0, 40, 0.0)
    sampling.assert_rate(40, 40, 1.0)
    with pytest.raises(ExpectationFailed):
        sampling.assert_rate(150, 200, 0.5)
    with pytest.raises(ExpectationFailed):
        sampling.assert_rate(39, 40, 1.0)
    with pytest.raises(NotEnoughData):
        sampling.assert_rate(1, 2, 0.5)


def test_log_checks_read_dynatrace_flattened_attributes() -> None:
    flat = {"attributes": {"request.id": "r1", "started_at": 1, "trace_id.w3c": TRACE}, "trace_id": ""}
    assert logs.kong_access_logs([flat]) == [flat]
    with pytest.raises(ExpectationFailed) as err:
        logs.assert_clean_trace_ids([flat])
    assert err.value.cause == "WRAPPED_TRACE_ID"
    clean = {"attributes": {"request.id": "r1", "started_at": 1, "trace_id": TRACE}, "trace_id": TRACE}
    logs.assert_clean_trace_ids([clean])


def test_stratified_trace_ids_give_kong_exactly_the_rate() -> None:
    ids = sampling.stratified_trace_ids(200, seed=7)
    assert len(set(ids)) == 200
    for rate in (0.0, 0.1, 0.5, 0.9, 1.0):
        traced = sum(kong_decides(tid, rate) for tid in ids)
        assert traced == round(rate * 200)
        sampling.assert_rate(traced, 200, rate)


def test_cumulative_up_down_counters_pass_as_dynatrace_accepts_them_as_gauges() -> None:
    up_down = {**point(0, 0, 10, "CUMULATIVE"), "name": "http.server.active_requests", "monotonic": False}
    metrics.assert_all_delta([point(1, 0, 10), up_down])
    with pytest.raises(ExpectationFailed):
        metrics.assert_all_delta([{**up_down, "monotonic": True}])


def test_expected_kong_spans_follow_tracing_instrumentations() -> None:
    from otelgate.expect.kong_spans import expected_kong_spans

    assert expected_kong_spans("off") == {}
    assert expected_kong_spans("request") == {"kong": 1}
    assert expected_kong_spans("all") == {"kong": 1, "kong.router": 1, "kong.access.plugin.opentelemetry": 1,
                                          "kong.header_filter.plugin.opentelemetry": 1, "kong.dns": 1,
                                          "kong.balancer": 1}
    assert "kong.dns" not in expected_kong_spans("all", upstream_is_hostname=False)
    assert expected_kong_spans("balancer,dns_query", tries=3) == {"kong": 1, "kong.dns": 1, "kong.balancer": 3}
    assert expected_kong_spans(["router"]) == {"kong": 1, "kong.router": 1}
    for bad in ("", "everything", "router,bogus"):
        with pytest.raises(ValueError):
            expected_kong_spans(bad)
