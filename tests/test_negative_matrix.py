"""The negative-control matcher: each row passes on its own evidence and fails when its evidence is swapped with
another row's; the README's matrix is the one generated from the control list.

Each row's evidence is built by the same code the claims use to build it (expect.* assertions on sink-shaped data,
claims.not_sampled / collector_down / incomplete), not typed in by hand."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from otelgate import claims, negative
from otelgate.expect import logs as expect_logs
from otelgate.expect import metrics as expect_metrics
from otelgate.expect import traces as expect_traces
from otelgate.expect.errors import ExpectationFailed

README = Path(__file__).resolve().parent.parent / "README.md"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REQUEST = "92a54b3e1a7c4f2da9e44b8a6f3e1dab"


def raised(call: Any, *args: Any) -> ExpectationFailed:
    with pytest.raises(ExpectationFailed) as err:
        call(*args)
    return err.value


def span(span_id: str, parent: str, service: str, name: str, kind: str, trace: str = TRACE, **attrs: Any) -> dict:
    return {"trace_id": trace, "span_id": span_id, "parent_span_id": parent, "service_name": service, "name": name,
            "kind": kind, "start_unix_nano": 0, "end_unix_nano": 1, "attributes": attrs}


def log_record(trace_id: Any, record_trace_id: str) -> dict:
    return {"attributes": {"request": {"id": REQUEST}, "started_at": 1, "trace_id": trace_id},
            "trace_id": record_trace_id}


def rejection(signal: str, status: int, reason: str, message: str) -> dict:
    return {"signal": signal, "http_status": status, "reason": reason, "message": message, "at": 1.0}


def example_failure(fault: str, suite: str) -> ExpectationFailed:
    """What the claim raises under this fault (as on a recorded run), through the claims' own evidence builders."""
    if fault.startswith("cumulative_to_delta"):
        return raised(expect_metrics.assert_no_rejections, [rejection(
            "metrics", 200, negative.CUMULATIVE_REASON, "The metric type monotonic cumulative sum is not supported")],
            "metrics")
    if fault.startswith("custom_fields_by_lua"):
        return raised(expect_logs.assert_clean_trace_ids, [log_record({"w3c": TRACE}, TRACE)])
    if fault.startswith("Lua snippet"):
        roots = [span("a" * 16, "", "kong-otel", "kong", "SERVER", **{"kong.request.id": REQUEST})]
        return raised(expect_logs.assert_joins_traces, [log_record(REQUEST, REQUEST)], roots)
    if fault.startswith("opentelemetry propagation"):
        tree = expect_traces.TraceTree([
            span("a" * 16, "", "kong-otel", "kong", "SERVER"), span("b" * 16, "a" * 16, "kong-otel", "kong.balancer",
                                                                     "CLIENT"),
            span("c" * 16, "", "coupon", "GET /coupons", "SERVER")])
        return raised(expect_traces.assert_service_path, tree, claims.TRACE_PATH)
    if fault.startswith("prometheus status_code_metrics"):
        return ExpectationFailed("NOT_COUNTED", "20 requests sent, counted none",
                                 evidence=claims.Evidence(expected=20, seen=0,
                                                          facts={"metric": claims.REQUEST_COUNTER}))
    if fault.startswith("prometheus bandwidth_metrics"):
        from otelgate import claims_services

        logs = [{"attributes": {"request.id": REQUEST, "request.size": 90, "response.size": 300, "started_at": 1}}]
        return raised(claims_services.check_bandwidth, [], 0, "pricing-route", logs)
    if fault.startswith("wrong Api-Token"):
        return raised(expect_metrics.assert_no_rejections,
                      [rejection(suite, 401, "UNAUTHENTICATED", "Token Authentication failed")], suite)
    watch = claims.TraceWatch(REQUEST, 0)
    if fault == "sampling rate 0":
        watch.log = {"attributes": {"request": {"id": REQUEST, "headers": {"traceparent": f"00-{TRACE}-{'1' * 16}-00"}},
                                    "started_at": 1, "trace_id": TRACE}, "trace_id": TRACE}
        return claims.not_sampled(watch, 0.0)
    if fault == "collector stopped":
        return claims.collector_down(watch, "http://127.0.0.1:1/")
    if fault.startswith("collector stopped mid-run"):
        watch.spans = [span("c" * 16, "b" * 16, "coupon", "GET /coupons", "SERVER"),
                       span("e" * 16, "d" * 16, "membership", "GET /isMember", "SERVER")]
        return claims.incomplete(watch, claims.TRACE_PATH)
    raise AssertionError(f"no example for control {fault!r}: add one")


ROWS = [(control, suite, wanted) for control in negative.CONTROLS for suite, wanted in control.must_fail.items()]
ROW_IDS = [f"{control.fault}/{suite}" for control, suite, _ in ROWS]


@pytest.mark.parametrize(("control", "suite", "wanted"), ROWS, ids=ROW_IDS)
def test_each_row_accepts_its_own_failure(control: negative.Control, suite: str, wanted: negative.Expect) -> None:
    failure = example_failure(control.fault, suite)
    assert negative.judge(wanted, failure), f"{wanted} rejected its own example:\n{failure}"


@pytest.mark.parametrize(("control", "suite", "wanted"), ROWS, ids=ROW_IDS)
def test_each_row_fails_when_its_evidence_is_swapped_with_another_row_s(
        control: negative.Control, suite: str, wanted: negative.Expect) -> None:
    own = example_failure(control.fault, suite)
    for other, other_suite, _ in ROWS:
        if (other.fault, other_suite) == (control.fault, suite):
            continue
        borrowed = example_failure(other.fault, other_suite).evidence
        swapped = ExpectationFailed(own.cause, own.message, evidence=borrowed)
        assert not negative.judge(wanted, swapped), (
            f"row {control.fault}/{suite} accepted the evidence of {other.fault}/{other_suite}: {borrowed}")


def test_a_right_cause_without_evidence_fails_every_row() -> None:
    for _control, _suite, wanted in ROWS:
        for cause in wanted.causes:
            assert not negative.judge(wanted, ExpectationFailed(cause, "no evidence"))


def test_the_readme_matrix_is_generated_from_the_control_list() -> None:
    text = README.read_text()
    match = re.search(r"<!-- negative-control matrix: generated by otelgate\.negative\.readme_matrix\(\) -->\n"
                      r"(.*?)\n<!-- end of negative-control matrix -->", text, flags=re.DOTALL)
    assert match, "README.md lost its generated negative-control matrix section"
    assert match.group(1) == negative.readme_matrix(), (
        "README.md's matrix differs from otelgate.negative.readme_matrix(): paste its output between the markers")


def test_the_printed_matrix_shows_cause_and_evidence_for_every_row() -> None:
    results = []
    for control, suite, wanted in ROWS:
        failure = example_failure(control.fault, suite)
        evidence = failure.evidence.summary()
        results.append(negative.ControlResult(control, suite, f"fail: {wanted}", f"failed: {failure.cause}", 0.0,
                                              True, evidence=evidence))
    lines = negative.render_matrix(results).splitlines()
    assert "evidence seen" in lines[0]
    for line, result, (_control, _suite, wanted) in zip(lines[1:], results, ROWS, strict=True):
        assert wanted.evidence.text[:20] in line and "failed: " in line and result.evidence[:40] in line
