"""Claim 2: Kong's metrics reach the backend as DELTA temporality, with counts that match the traffic sent."""

import pytest

from otelgate import claims
from otelgate.stacks.base import Stack

pytestmark = [pytest.mark.metrics, pytest.mark.stack]


def test_kong_metrics_arrive_as_delta_and_count_every_request(warm_stack: Stack) -> None:
    points = claims.check_metrics_delta_and_counts(warm_stack, requests=20)
    assert {p["name"] for p in points} >= {claims.REQUEST_COUNTER, claims.LATENCY_HISTOGRAM}
