"""Claim 4: the traced fraction follows Kong's sampling rate (exact at 0 and 1, statistically in between), and
Kong's deterministic per-trace-id decisions are reproduced."""

import pytest

from otelgate import claims
from otelgate.expect.sampling import stratified_trace_ids
from otelgate.stacks.base import Stack

pytestmark = [pytest.mark.sampling, pytest.mark.stack]


# Trace ids spread evenly over Kong's sampling range (see stratified_trace_ids): a release gate must not fail one
# run in twenty by chance, as a 95% interval over random ids would. The sampling sweep (nox -s load) measures
# Kong-generated random ids under load instead, and the last test here checks them at rate 1.
SEED = 20261126


@pytest.mark.parametrize(("rate", "requests"), [(1.0, 40), (0.0, 40), (0.5, 200), (0.1, 200)])
def test_traced_fraction_matches_the_sampling_rate(warm_stack: Stack, rate: float, requests: int) -> None:
    trace_ids = stratified_trace_ids(requests, SEED)
    with claims.applied(warm_stack, sampling_rate=rate):
        fraction = claims.check_sampling_rate(warm_stack, rate, requests, trace_ids=trace_ids)
    print(f"rate {rate}: {fraction}")


def test_kong_generated_trace_ids_are_all_traced_at_rate_1(warm_stack: Stack) -> None:
    with claims.applied(warm_stack, sampling_rate=1.0):
        claims.check_sampling_rate(warm_stack, 1.0, 40)


def test_crafted_trace_ids_are_sampled_exactly_as_kong_decides(warm_stack: Stack) -> None:
    with claims.applied(warm_stack, sampling_rate=0.5):
        claims.check_deterministic_sampling(warm_stack, 0.5)
