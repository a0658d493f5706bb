"""Suite-wide set-up: one warm-up that waits until all three signals flow, and the negative-control matrix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otelgate import claims
from otelgate.negative import ControlResult, render_matrix
from otelgate.stacks.base import Stack

CONTROL_RESULTS: list[ControlResult] = []


@pytest.fixture(scope="session")
def warm_stack(stack: Stack) -> Iterator[Stack]:
    """Wait until traces, metrics and logs all reach the sink before the first check (one signal flowing says
    nothing about the others), and make Kong's per-route series exist so later deltas count from a known point.
    A signal that does not arrive is not a set-up error: its claim fails with its own cause and evidence, and the
    other claims still give their verdicts (readiness is not a verdict)."""
    arrived = claims.prime(stack)
    missing = [signal for signal, ok in arrived.items() if not ok]
    if missing:
        print(f"otelgate warm-up: {', '.join(missing)} did not arrive; the matching claims will say why")
    yield stack


@pytest.fixture
def control_results() -> list[ControlResult]:
    return CONTROL_RESULTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CONTROL_RESULTS:
        terminalreporter.section("otelgate negative controls")
        terminalreporter.write_line(render_matrix(CONTROL_RESULTS))
