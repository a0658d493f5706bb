"""otelgate's assertion library, importable by your own tests.

Every function takes normalized telemetry (plain dicts, as the sink's query API and dumps return them), refuses to
pass on empty data, and raises :class:`ExpectationFailed` with a stable ``cause`` and the evidence.
"""

from otelgate.expect.errors import Evidence, ExpectationFailed, NotEnoughData, Rejection
from otelgate.expect.kong_sampler import kong_decides
from otelgate.expect.logs import assert_clean_trace_ids, assert_joins_traces, kong_access_logs
from otelgate.expect.metrics import (
    assert_all_delta,
    assert_attribute_everywhere,
    assert_contiguous_windows,
    assert_count,
    assert_no_rejections,
)
from otelgate.expect.sampling import Decision, assert_decisions, assert_rate, wilson_interval
from otelgate.expect.traces import (
    TraceTree,
    assert_complete,
    assert_one_trace,
    assert_parent,
    assert_service_path,
    kong_root_for_request,
)

__all__ = [
    "Decision",
    "Evidence",
    "ExpectationFailed",
    "NotEnoughData",
    "Rejection",
    "TraceTree",
    "assert_all_delta",
    "assert_attribute_everywhere",
    "assert_clean_trace_ids",
    "assert_complete",
    "assert_contiguous_windows",
    "assert_count",
    "assert_decisions",
    "assert_joins_traces",
    "assert_no_rejections",
    "assert_one_trace",
    "assert_parent",
    "assert_rate",
    "assert_service_path",
    "kong_access_logs",
    "kong_decides",
    "kong_root_for_request",
    "wilson_interval",
]
