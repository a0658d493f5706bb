"""Negative controls: a known misconfiguration under which a claim must fail, and for the stated cause.

A gate that cannot fail is worse than none. Each control applies one fault to the running stack
(:meth:`Stack.reconfigure`), runs the matching claim, records what happened, and restores the stack.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otelgate import claims
from otelgate.expect.errors import ExpectationFailed
from otelgate.stacks.base import Stack
from otelgate.waiting import WaitTimeout

Check = Callable[[Stack], object]

# Plausible and wrong: the request id is 32 hex too, so only the join to a stored trace can catch it.
WRONG_FIELD_LUA = "return kong.log.serialize().request.id\n"
# Control runs use short waits: a working pipeline delivers locally in ~1-3 s (see README), so a fault fails fast.
CONTROL_TIMING = claims.Timing(signal=10.0, settle=3.0, scrape=12.0)

CHECKS: dict[str, Check] = {
    "traces": claims.check_trace_spans_services,
    "metrics": claims.check_metrics_delta_and_counts,
    "logs": claims.check_access_logs,
}


@dataclass(frozen=True)
class Control:
    fault: str
    changes: Mapping[str, Any]
    must_fail: Mapping[str, frozenset[str]]     # suite -> acceptable failure causes
    must_pass: tuple[str, ...] = ()             # suites that must still pass under the fault


@dataclass
class ControlResult:
    control: Control
    suite: str
    expected: str
    observed: str
    seconds: float
    ok: bool
    details: str = field(default="", repr=False)


def _tcp_log_lua(code: str | None) -> dict[str, dict[str, Any]]:
    return {"tcp-log": {"custom_fields_by_lua": None if code is None else {"trace_id": code}}}


CONTROLS: tuple[Control, ...] = (
    Control("cumulative_to_delta removed from the metrics pipeline", {"drop_processors": ("cumulative_to_delta",)},
            {"metrics": frozenset({"SINK_REJECTIONS", "CUMULATIVE_POINTS"})}),
    Control("custom_fields_by_lua removed from tcp-log", {"kong_plugin_config": _tcp_log_lua(None)},
            {"logs": frozenset({"WRAPPED_TRACE_ID"})}),
    Control("Lua snippet returns the wrong field (request id)", {"kong_plugin_config": _tcp_log_lua(WRONG_FIELD_LUA)},
            {"logs": frozenset({"LOG_TRACE_JOIN"})}),
    Control("opentelemetry propagation injects nothing upstream",
            {"kong_plugin_config": {"opentelemetry": {"propagation": {"extract": ["w3c"], "inject": [],
                                                                      "default_format": "w3c"}}}},
            {"traces": frozenset({"BROKEN_PATH"})}),
    Control("prometheus status_code_metrics off",
            {"kong_plugin_config": {"prometheus": {"status_code_metrics": False}}},
            # A reload keeps Kong's shared-dict counters, so the old series stays exported, frozen: nothing is counted.
            # A fresh Kong (a rollout) has no series at all. Either way the request counter does not count traffic.
            {"metrics": frozenset({"MISSING_METRIC", "NOT_COUNTED"})}),
    Control("wrong Api-Token in the collector's exporter",
            {"exporter_token": "dt0c01.WRONGTOKENWRONGTOKENWRONG." + "0" * 64},
            {"traces": frozenset({"NO_TRACE"}), "metrics": frozenset({"SINK_REJECTIONS", "NO_METRICS"}),
             "logs": frozenset({"NO_LOGS"})}),
    Control("sampling rate 0", {"sampling_rate": 0.0},
            {"traces": frozenset({"NO_TRACE"})}, must_pass=("metrics", "logs")),
    Control("collector stopped mid-run", {"collector_running": False},
            {"traces": frozenset({"NO_TRACE"})}),
)


def run_control(stack: Stack, control: Control) -> list[ControlResult]:
    """Apply the fault, run each affected suite's check, restore; one result per suite."""
    results: list[ControlResult] = []
    previous_timing = getattr(stack, "timing", None)
    stack.timing = CONTROL_TIMING  # type: ignore[attr-defined]
    try:
        with claims.applied(stack, **control.changes):
            for suite, causes in control.must_fail.items():
                results.append(_expect_failure(stack, control, suite, causes))
            for suite in control.must_pass:
                results.append(_expect_success(stack, control, suite))
    finally:
        stack.timing = previous_timing  # type: ignore[attr-defined]
    return results


def _expect_failure(stack: Stack, control: Control, suite: str, causes: frozenset[str]) -> ControlResult:
    began = time.monotonic()
    expected = "fail: " + "|".join(sorted(causes))
    try:
        CHECKS[suite](stack)
    except ExpectationFailed as exc:
        observed, details = f"failed: {exc.cause}", str(exc)
        ok = exc.cause in causes
    except WaitTimeout as exc:
        observed, details, ok = "failed: unclassified timeout", str(exc), False
    else:
        observed, details, ok = "PASSED (control is blind)", "", False
    return ControlResult(control, suite, expected, observed, time.monotonic() - began, ok, details)


def _expect_success(stack: Stack, control: Control, suite: str) -> ControlResult:
    began = time.monotonic()
    try:
        CHECKS[suite](stack)
    except (ExpectationFailed, WaitTimeout) as exc:
        cause = getattr(exc, "cause", "timeout")
        return ControlResult(control, suite, "pass", f"failed: {cause}", time.monotonic() - began, False, str(exc))
    return ControlResult(control, suite, "pass", "passed", time.monotonic() - began, True)


def render_matrix(results: list[ControlResult]) -> str:
    rows = [("fault", "suite", "expected", "observed", "s", "ok")]
    rows += [(r.control.fault, r.suite, r.expected, r.observed, f"{r.seconds:.1f}", "yes" if r.ok else "NO")
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


