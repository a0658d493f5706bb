"""Claim 4: every proxied request is traced iff Kong's sampling rule says so for its trace id, at rates 0, 0.1, 0.5
and 1, with Kong-generated ids (read back from Kong's access log) and with crafted ids whose sampled count is exact.

The expected decision comes from otelgate.expect.kong_sampler, written from Kong's source and pinned by Kong's own
test vectors; it shares no code with the Kong simulator it judges on the local stack. All batches are sent first,
each while its rate is in force, and judged after one wait for the pipeline (otelgate.sampling_claim.sweep)."""

from collections.abc import Mapping

import pytest

from otelgate.expect.errors import ExpectationFailed
from otelgate.expect.sampling import DecisionReport
from otelgate.sampling_claim import CRAFTED_COUNT, Planned, sweep
from otelgate.stacks.base import Stack

pytestmark = [pytest.mark.sampling, pytest.mark.stack]

PLAN = (Planned(0.0, 20), Planned(0.1, 100, crafted=True), Planned(0.5, 100, crafted=True), Planned(1.0, 20))
Verdicts = Mapping[tuple[float, str], DecisionReport | ExpectationFailed]


@pytest.fixture(scope="module")
def verdicts(warm_stack: Stack) -> Verdicts:
    return sweep(warm_stack, PLAN)


def verdict(verdicts: Verdicts, rate: float, kind: str) -> DecisionReport:
    outcome = verdicts[(rate, kind)]
    if isinstance(outcome, ExpectationFailed):
        raise outcome
    print(outcome)  # the 95% interval of the traced fraction: a summary line, not the verdict
    return outcome


@pytest.mark.parametrize("rate", [p.rate for p in PLAN])
def test_each_request_is_traced_iff_kong_samples_its_trace_id(verdicts: Verdicts, rate: float) -> None:
    report = verdict(verdicts, rate, "generated")
    assert report.traced == report.expected_traced


@pytest.mark.parametrize("rate", [p.rate for p in PLAN if p.crafted])
def test_crafted_ids_are_sampled_in_exactly_the_count_kong_s_rule_gives(verdicts: Verdicts, rate: float) -> None:
    report = verdict(verdicts, rate, "crafted")
    assert report.traced == round(rate * CRAFTED_COUNT) + 1, report  # boundary ids: one below is sampled
