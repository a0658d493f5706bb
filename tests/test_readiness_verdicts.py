"""Readiness is not a verdict: a stack whose trace path is broken from the start (Kong's opentelemetry plugin injects
only b3, which the demo services do not read) still comes up, and each claim gives its own verdict: the trace claim
fails with BROKEN_PATH and the hop that broke, the metrics claim passes, and the logs claim fails with its own cause:
Kong puts into the serializer's trace_id only the formats it injected (Kong/kong@3.9.1
kong/observability/tracing/propagation/init.lua:150-157 and :214-217), so the map is {"b3": ...} and the manifest's
custom_fields_by_lua snippet, which returns its "w3c" entry, leaves no trace_id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otelgate import claims
from otelgate.expect.errors import ExpectationFailed
from otelgate.pytest_plugin import require_collector
from otelgate.stacks.base import StackSettings
from otelgate.stacks.local import LocalStack

pytestmark = [pytest.mark.stack, pytest.mark.collector]

B3_ONLY = {"opentelemetry": {"propagation": {"extract": ["w3c", "b3"], "inject": ["b3"], "default_format": "b3"}}}


@pytest.fixture(scope="module")
def b3_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    require_collector()
    stack = LocalStack.start(StackSettings(kong_plugin_config=B3_ONLY),
                             workdir=Path(tmp_path_factory.mktemp("b3-only")))
    try:
        yield stack
    finally:
        stack.close()


def test_each_claim_gives_its_verdict_when_the_trace_path_is_broken(b3_stack: LocalStack) -> None:
    arrived = claims.prime(b3_stack)
    assert arrived == {"traces": True, "logs": True, "metrics": True}, arrived  # Kong's own spans do arrive
    with pytest.raises(ExpectationFailed) as err:
        claims.check_trace_spans_services(b3_stack)
    assert err.value.cause == "BROKEN_PATH", err.value
    assert err.value.evidence.hop == f"{claims.KONG_SERVICE} -> {claims.TRACE_PATH[1]}", err.value
    claims.check_metrics_delta_and_counts(b3_stack)
    with pytest.raises(ExpectationFailed) as err:
        claims.check_access_logs(b3_stack)
    assert err.value.cause == "UNCLEAN_TRACE_ID" and "no trace_id field" in err.value.details, err.value
