"""Negative controls: a known misconfiguration under which a claim must fail, for the stated cause AND with the
evidence that tells that fault apart from the others.

A gate that cannot fail is worse than none, and a gate that fails for the wrong reason proves nothing about the
fault it was given: a wrong token and a sampling rate of 0 both leave "no trace" at the sink, so each control names
the cause and the distinguishing evidence (:class:`Expect`), and a control observed with the right cause but other
evidence fails. Each control applies one fault to the running stack (:meth:`Stack.reconfigure`), runs the matching
claim, records what happened, and restores the stack. The README's matrix is generated from :data:`CONTROLS`
(:func:`readme_matrix`; a test keeps them equal).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otelgate import claims
from otelgate.expect.errors import Evidence, ExpectationFailed
from otelgate.stacks.base import Stack
from otelgate.waiting import WaitTimeout

Check = Callable[[Stack], object]

# Plausible and wrong: the request id is 32 hex too, so only the join to a stored trace can catch it.
WRONG_FIELD_LUA = "return kong.log.serialize().request.id\n"
WRONG_TOKEN = "dt0c01.WRONGTOKENWRONGTOKENWRONG." + "0" * 64
CUMULATIVE_REASON = "UNSUPPORTED_METRIC_TYPE_MONOTONIC_CUMULATIVE_SUM"
# Control runs use short waits: a working pipeline delivers locally in ~1-3 s (see README), so a fault fails fast.
CONTROL_TIMING = claims.Timing(signal=10.0, settle=2.5, scrape=12.0, down=0.6)
# Kong holds its span batch this long (queue.max_coalescing_delay, Kong/kong@3.9.1 kong/tools/queue_schema.lua:13-17)
# in the mid-run control, so the collector goes down while Kong's spans are in flight and the services' are stored.
# A queue keeps the parameters it was created with across config reloads (kong/tools/queue.lua:205-216), so the
# control restarts Kong: through kong.conf tracing_sampling_rate, which the plugin's sampling_rate 1 supersedes.
MID_RUN_COALESCING_SECONDS = 3
MID_RUN_CHANGES: dict[str, Any] = {
    "kong_plugin_config": {"opentelemetry": {"queue.max_coalescing_delay": MID_RUN_COALESCING_SECONDS}},
    "sampling_rate": 1.0, "tracing_sampling_rate": 0.5}


@dataclass(frozen=True)
class EvidenceRule:
    """The evidence that distinguishes a fault: ``text`` for people (README, matrix), ``holds`` for the matcher."""

    text: str
    holds: Callable[[Evidence], bool] = field(compare=False)


def rejected(signal: str, *, status: int | None = None, reason: str | None = None) -> EvidenceRule:
    def holds(evidence: Evidence) -> bool:
        return any(r.signal == signal and (status is None or r.http_status == status)
                   and (reason is None or r.reason == reason) for r in evidence.rejections)

    what = " ".join(part for part in (f"HTTP {status}" if status else "", reason or "") if part)
    return EvidenceRule(f"the sink refused {signal}: {what}", holds)


def hop_broken(hop: str) -> EvidenceRule:
    return EvidenceRule(f"hop {hop} broken in a stored trace", lambda e: e.hop == hop
                        and not e.facts.get("services_missing"))


def fact(text: str, key: str, test: Callable[[Any], bool], **also: Any) -> EvidenceRule:
    def holds(evidence: Evidence) -> bool:
        return key in evidence.facts and test(evidence.facts[key]) and all(
            getattr(evidence, name) == value for name, value in also.items())

    return EvidenceRule(text, holds)


COUNTED_NONE = EvidenceRule("requests sent, counter moved by 0", lambda e: bool(e.expected) and e.seen == 0
                            and e.facts.get("metric") == claims.REQUEST_COUNTER)
BANDWIDTH_NONE = EvidenceRule("access logs carry the sizes, bandwidth counter moved by 0",
                              lambda e: bool(e.expected) and e.seen == 0
                              and e.facts.get("metric") == claims.TOPOLOGY.bandwidth_counter)
WRAPPED = fact('the access logs\' trace_id is Kong\'s {"w3c": ...} map', "wrapped_trace_ids", lambda n: n > 0)
JOIN_ELSEWHERE = fact("log trace_id names no stored trace; the request's Kong root is stored under another id",
                      "trace_stored_under_other_id", lambda n: n > 0)
NOT_SAMPLED = fact("access log arrived with Kong's not-sampled traceparent; no Kong root span", "kong_decision",
                   lambda v: v == "not sampled", collector_reachable=True)
PARTIAL_TRACE = fact("part of the trace stored, the rest missing; collector unreachable", "services_missing",
                     lambda missing: bool(missing), collector_reachable=False)
COLLECTOR_GONE = fact("nothing of the request stored; the collector refuses connections", "spans_seen",
                      lambda n: n == 0, collector_reachable=False)


@dataclass(frozen=True)
class Expect:
    """How one suite must fail under a control: one of ``causes``, with evidence satisfying ``evidence``."""

    causes: frozenset[str]
    evidence: EvidenceRule

    def matches(self, failure: ExpectationFailed) -> bool:
        return failure.cause in self.causes and self.evidence.holds(failure.evidence)

    def __str__(self) -> str:
        return f"{' | '.join(sorted(self.causes))}: {self.evidence.text}"


def expect(*causes: str, evidence: EvidenceRule) -> Expect:
    return Expect(frozenset(causes), evidence)


@dataclass(frozen=True)
class Control:
    fault: str
    changes: Mapping[str, Any]
    must_fail: Mapping[str, Expect]             # suite -> the failure it must show
    must_pass: tuple[str, ...] = ()             # suites that must still pass under the fault
    checks: Mapping[str, Check] = field(default_factory=dict)  # suite -> a check other than the suite's claim


@dataclass
class ControlResult:
    control: Control
    suite: str
    expected: str
    observed: str
    seconds: float
    ok: bool
    details: str = field(default="", repr=False)
    evidence: str = ""


def _tcp_log_lua(code: str | None) -> dict[str, dict[str, Any]]:
    return {"tcp-log": {"custom_fields_by_lua": None if code is None else {"trace_id": code}}}


def stop_collector_mid_trace(stack: Stack, watch: claims.TraceWatch) -> None:
    """Trace hook: stop the collector once the services' spans are stored and Kong's batch is still in Kong."""
    if watch.root is None and watch.spans and stack.settings.collector_running:
        stack.reconfigure(collector_running=False)


def check_trace_with_collector_stopped_mid_run(stack: Stack) -> object:
    """The trace claim, with the collector stopped while this request's trace is in flight; restarted after."""
    try:
        return claims.check_trace_spans_services(stack, hook=stop_collector_mid_trace)
    finally:
        if not stack.settings.collector_running:
            stack.reconfigure(collector_running=True)


CONTROLS: tuple[Control, ...] = (
    Control("cumulative_to_delta removed from the metrics pipeline", {"drop_processors": ("cumulative_to_delta",)},
            {"metrics": expect("SINK_REJECTIONS", evidence=rejected("metrics", reason=CUMULATIVE_REASON))}),
    Control("custom_fields_by_lua removed from tcp-log", {"kong_plugin_config": _tcp_log_lua(None)},
            {"logs": expect("WRAPPED_TRACE_ID", evidence=WRAPPED)}),
    Control("Lua snippet returns the wrong field (request id)", {"kong_plugin_config": _tcp_log_lua(WRONG_FIELD_LUA)},
            {"logs": expect("LOG_TRACE_JOIN", evidence=JOIN_ELSEWHERE)}),
    Control("opentelemetry propagation injects nothing upstream",
            {"kong_plugin_config": {"opentelemetry": {"propagation": {"extract": ["w3c"], "inject": [],
                                                                      "default_format": "w3c"}}}},
            {"traces": expect("BROKEN_PATH", evidence=hop_broken(" -> ".join(claims.TRACE_PATH[:2])))}),
    Control("prometheus status_code_metrics off",
            {"kong_plugin_config": {"prometheus": {"status_code_metrics": False}}},
            # A reload keeps Kong's shared-dict counters, so the old series stays exported, frozen: nothing is counted.
            # A fresh Kong (a rollout) has no series at all. Either way the request counter does not count traffic.
            {"metrics": expect("MISSING_METRIC", "NOT_COUNTED", evidence=COUNTED_NONE)}),
    # added because `otelgate mutate` found bandwidth_metrics off surviving every claim
    Control("prometheus bandwidth_metrics off", {"kong_plugin_config": {"prometheus": {"bandwidth_metrics": False}}},
            {"metrics": expect("BANDWIDTH_MISMATCH", evidence=BANDWIDTH_NONE)}),
    Control("wrong Api-Token in the collector's exporter", {"exporter_token": WRONG_TOKEN},
            {suite: expect("SINK_REJECTIONS", evidence=rejected(suite, status=401))
             for suite in ("traces", "metrics", "logs")}),
    Control("sampling rate 0", {"sampling_rate": 0.0},
            {"traces": expect("NOT_SAMPLED", evidence=NOT_SAMPLED)}, must_pass=("metrics", "logs")),
    Control("collector stopped", {"collector_running": False},
            {"traces": expect("COLLECTOR_DOWN", evidence=COLLECTOR_GONE)}),
    Control("collector stopped mid-run (services' spans stored, Kong's batch in flight)",
            MID_RUN_CHANGES, {"traces": expect("INCOMPLETE_TRACE", evidence=PARTIAL_TRACE)},
            checks={"traces": check_trace_with_collector_stopped_mid_run}),
)

CHECKS: dict[str, Check] = {
    "traces": claims.check_trace_spans_services,
    "metrics": claims.check_metrics_delta_and_counts,
    "logs": claims.check_access_logs,
}


def run_control(stack: Stack, control: Control) -> list[ControlResult]:
    """Apply the fault, run each affected suite's check, restore; one result per suite."""
    results: list[ControlResult] = []
    previous_timing = getattr(stack, "timing", None)
    stack.timing = CONTROL_TIMING  # type: ignore[attr-defined]
    try:
        with claims.applied(stack, **control.changes):
            for suite, wanted in control.must_fail.items():
                results.append(_expect_failure(stack, control, suite, wanted))
            for suite in control.must_pass:
                results.append(_expect_success(stack, control, suite))
    finally:
        stack.timing = previous_timing  # type: ignore[attr-defined]
    return results


def judge(wanted: Expect, failure: ExpectationFailed) -> bool:
    """The matcher: the right cause AND the distinguishing evidence."""
    return wanted.matches(failure)


def _expect_failure(stack: Stack, control: Control, suite: str, wanted: Expect) -> ControlResult:
    began = time.monotonic()
    check = control.checks.get(suite, CHECKS[suite])
    evidence = ""
    try:
        check(stack)
    except ExpectationFailed as exc:
        observed, details, ok = f"failed: {exc.cause}", str(exc), judge(wanted, exc)
        evidence = exc.evidence.summary()
        if exc.cause in wanted.causes and not ok:
            observed += " (evidence does not match)"
    except WaitTimeout as exc:
        observed, details, ok = "failed: unclassified timeout", str(exc), False
    else:
        observed, details, ok = "PASSED (control is blind)", "", False
    return ControlResult(control, suite, f"fail: {wanted}", observed, time.monotonic() - began, ok, details,
                         evidence)


def _expect_success(stack: Stack, control: Control, suite: str) -> ControlResult:
    began = time.monotonic()
    try:
        CHECKS[suite](stack)
    except (ExpectationFailed, WaitTimeout) as exc:
        cause = getattr(exc, "cause", "timeout")
        return ControlResult(control, suite, "pass", f"failed: {cause}", time.monotonic() - began, False, str(exc))
    return ControlResult(control, suite, "pass", "passed", time.monotonic() - began, True)


def render_matrix(results: list[ControlResult]) -> str:
    """The matrix printed at the end of a run: every row with its expected cause and evidence and what was seen."""
    rows = [("fault", "suite", "expected", "observed", "evidence seen", "s", "ok")]
    rows += [(r.control.fault, r.suite, r.expected, r.observed, r.evidence[:240], f"{r.seconds:.1f}",
              "yes" if r.ok else "NO") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def readme_matrix(controls: tuple[Control, ...] = CONTROLS) -> str:
    """The README's table of controls, generated from :data:`CONTROLS`."""
    lines = ["| fault | must fail | cause | distinguishing evidence |", "|---|---|---|---|"]
    for control in controls:
        for suite, wanted in control.must_fail.items():
            note = f" ({', '.join(control.must_pass)} must still pass)" if control.must_pass else ""
            lines.append(f"| {control.fault} | {suite}{note} | `{'` / `'.join(sorted(wanted.causes))}` | "
                         f"{wanted.evidence.text} |")
    return "\n".join(lines)
