"""Claim 4: every proxied request is traced iff Kong's sampling rule says so for its trace id, at rates 0, 0.1, 0.5
and 1, with Kong-generated ids (read back from Kong's access log) and with crafted ids whose sampled count is exact.

The expected decision comes from otelgate.expect.kong_sampler, written from Kong's source and pinned by Kong's own
test vectors; it shares no code with the Kong simulator it judges on the local stack."""

import pytest

from otelgate import claims
from otelgate.sampling_claim import check_crafted_sampling, check_sampling_decisions
from otelgate.stacks.base import Stack

pytestmark = [pytest.mark.sampling, pytest.mark.stack]


@pytest.mark.parametrize(("rate", "requests"), [(0.0, 30), (0.1, 150), (0.5, 150), (1.0, 30)])
def test_each_request_is_traced_iff_kong_samples_its_trace_id(warm_stack: Stack, rate: float, requests: int) -> None:
    with claims.applied(warm_stack, sampling_rate=rate):
        report = check_sampling_decisions(warm_stack, rate, requests)
    print(report)  # the 95% interval of the traced fraction: a summary line, not the verdict


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_crafted_ids_are_sampled_in_exactly_the_count_kong_s_rule_gives(warm_stack: Stack, rate: float) -> None:
    report = check_crafted_sampling(warm_stack, rate)
    assert report.traced == round(rate * 100) + 1, report
    print(report)
