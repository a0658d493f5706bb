"""Run by ``tests/test_reports_e2e.py`` in a child pytest, never on their own: one claim that holds and the same
claim made to fail on purpose by a negative-control fault. The child run writes artifacts for both (the passing
run's dump and the failing run's), which the parent then inspects, opens in Chromium and replays.

Its name does not match ``test_*.py``, so the default run never collects it; the parent names it explicitly.
``OTELGATE_REPORTS_CHILD_TOKEN`` (a throwaway token the parent made)
becomes the local stack's sink token, so the parent can check that it appears in no artifact.
"""

from __future__ import annotations

import os

import pytest

from otelgate import claims
from otelgate.negative import CONTROLS
from otelgate.stacks.base import Stack

CHILD = os.environ.get("OTELGATE_REPORTS_CHILD") == "1"
TOKEN = os.environ.get("OTELGATE_REPORTS_CHILD_TOKEN")
TRACE_FAULT = next(c for c in CONTROLS if "BROKEN_PATH" in getattr(c.must_fail.get("traces"), "causes", ()))

pytestmark = [pytest.mark.stack]

if CHILD and TOKEN:
    import otelgate.stacks.local

    otelgate.stacks.local.generate_token = lambda: TOKEN  # type: ignore[assignment]


def test_the_trace_claim_holds(stack: Stack) -> None:
    if TOKEN and getattr(stack, "name", None) == "local":
        assert getattr(stack, "_token", None) == TOKEN, "the stack did not take the parent's token"
    tree = claims.check_trace_spans_services(stack)
    assert {"kong-otel", "coupon", "membership"} <= set(tree.services())


def test_the_trace_claim_fails_under_a_negative_control_fault(stack: Stack) -> None:
    with claims.applied(stack, **TRACE_FAULT.changes):
        claims.check_trace_spans_services(stack)
