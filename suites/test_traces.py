"""Claim 1: traces span Kong -> Coupon -> Membership as one trace, each hop parent-linked."""

import pytest

from otelgate import claims
from otelgate.stacks.base import Stack

pytestmark = [pytest.mark.traces, pytest.mark.stack]


def test_one_request_is_one_trace_from_kong_through_coupon_to_membership(warm_stack: Stack) -> None:
    tree = claims.check_trace_spans_services(warm_stack)
    assert tree.find(service=claims.TRACE_PATH[-1], kind="SERVER"), tree.render()


def test_kong_root_span_carries_the_request_id_the_client_saw(warm_stack: Stack) -> None:
    traffic = claims.send(warm_stack.gateway_url, claims.TRACES_ROUTE.path)
    claims.require_ok(traffic, 1)
    tree = claims.wait_for_trace_of_request(warm_stack, traffic.request_ids[0], claims.TRACE_PATH)
    root = tree.find(service=claims.KONG_SERVICE, name="kong")
    assert root and root[0]["attributes"]["kong.request.id"] == traffic.request_ids[0], tree.render()
    assert root[0]["parent_span_id"] == "", "a request without trace headers starts a new trace at Kong"
