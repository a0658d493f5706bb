"""Claim 4: the traced fraction follows Kong's sampling rate (exact at 0 and 1, statistically in between), and
Kong's deterministic per-trace-id decisions are reproduced."""

import pytest

from otelgate import claims
from otelgate.stacks.base import Stack

pytestmark = [pytest.mark.sampling, pytest.mark.stack]


@pytest.mark.parametrize(("rate", "requests"), [(1.0, 40), (0.0, 40), (0.5, 200)])
def test_traced_fraction_matches_the_sampling_rate(warm_stack: Stack, rate: float, requests: int) -> None:
    with claims.applied(warm_stack, sampling_rate=rate):
        fraction = claims.check_sampling_rate(warm_stack, rate, requests)
    print(f"rate {rate}: {fraction}")


def test_crafted_trace_ids_are_sampled_exactly_as_kong_decides(warm_stack: Stack) -> None:
    with claims.applied(warm_stack, sampling_rate=0.5):
        claims.check_deterministic_sampling(warm_stack, 0.5)
