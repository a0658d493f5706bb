"""Acceptance of the sampling gate: with the Kong simulator switched to each wrong sampler (wrong bytes, wrong byte
order, inverted range, threshold 10% high), the sampling suite's crafted-id checks (suites/test_sampling.py:
otelgate.sampling_claim.sweep over crafted ids at 0.5 and 0.1) fail for the sampling cause, with evidence; with
Kong's sampler they pass on the same stack.

The switch is the simulator's test-only environment variable (otelgate.kongsim.tracing.SAMPLER_VARIANT_ENV), read
when the simulator process starts: each case restarts the simulator (a kong.conf change, ``tracing_sampling_rate``,
which the plugin's ``sampling_rate`` set by the checks supersedes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otelgate.claims import Timing
from otelgate.expect.errors import ExpectationFailed
from otelgate.kongsim.tracing import SAMPLER_VARIANT_ENV, SAMPLER_VARIANTS
from otelgate.pytest_plugin import require_collector
from otelgate.sampling_claim import Planned, sweep
from otelgate.stacks.local import LocalStack

pytestmark = [pytest.mark.stack, pytest.mark.collector]

CASES = ("", *SAMPLER_VARIANTS)  # "" = Kong's own sampler: the same checks pass
RATES = (0.5, 0.1)


@pytest.fixture(scope="module")
def variant_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    require_collector()
    stack = LocalStack.start(workdir=Path(tmp_path_factory.mktemp("sampling-variants")))
    stack.timing = Timing(signal=15.0, settle=2.0)  # type: ignore[attr-defined]  # a wrong sampler's roots never come
    try:
        yield stack
    finally:
        stack.close()


def switch_sampler(stack: LocalStack, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Restart the simulator with ``variant`` (a distinct tracing_sampling_rate per case forces the restart)."""
    monkeypatch.setenv(SAMPLER_VARIANT_ENV, variant)
    stack.reconfigure(tracing_sampling_rate=1.0 - 0.01 * (CASES.index(variant) + 1))


@pytest.mark.parametrize("variant", CASES, ids=[v or "kong" for v in CASES])
def test_the_sampling_suite_fails_for_the_sampling_cause_on_each_wrong_sampler(
        variant_stack: LocalStack, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    switch_sampler(variant_stack, variant, monkeypatch)
    verdicts = sweep(variant_stack, [Planned(rate, 0, crafted=True) for rate in RATES])
    for rate in RATES:
        outcome = verdicts[(rate, "crafted")]
        if not variant:
            assert not isinstance(outcome, ExpectationFailed), outcome
            continue
        assert isinstance(outcome, ExpectationFailed), f"{variant} passed at rate {rate}: {outcome}"
        assert outcome.cause == "SAMPLING_DECISION", outcome
        assert outcome.evidence.facts["rate"] == rate and outcome.evidence.facts["mismatches"] > 0, outcome
        assert "Kong's rule says" in outcome.details, outcome
