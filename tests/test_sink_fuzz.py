"""Property tests: random bytes and random valid-but-odd OTLP messages against all three endpoints.

Whatever arrives, the sink answers below 500 (only deliberate fault injection may answer 5xx), keeps serving, and
never holds more than its cap.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otelgate.sink.server import SinkServer
from otelgate.sink.testing import (
    fake_token,
    gauge_metric,
    log_record,
    logs_request,
    metrics_request,
    span,
    traces_request,
)

CAP = 60
TOKEN = fake_token()
SIGNALS = ("traces", "metrics", "logs")
# OTELGATE_FUZZ_EXAMPLES=1000 for a longer run
FUZZ = settings(deadline=None, max_examples=int(os.environ.get("OTELGATE_FUZZ_EXAMPLES", "60")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def sinks() -> Iterator[dict[str, SinkServer]]:
    with SinkServer(profile="dynatrace", token=TOKEN, max_items=CAP) as dynatrace, \
            SinkServer(profile="otlp", max_items=CAP) as plain:
        yield {"dynatrace": dynatrace, "otlp": plain}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def _post(http: httpx.Client, sink: SinkServer, signal: str, body: bytes, content_type: str,
          gzip_it: bool = False) -> httpx.Response:
    headers = {"Content-Type": content_type, "Authorization": f"Api-Token {TOKEN}"}
    if gzip_it:
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    response = http.post(sink.signal_url(signal), content=body, headers=headers)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    return response


def _assert_bounded(sink: SinkServer) -> None:
    sizes = sink.client.health()["store"]
    assert sizes["spans"] <= CAP and sizes["metric_points"] <= CAP and sizes["logs"] <= CAP
    assert sizes["rejections"] <= CAP


# ------------------------------------------------------------------ strategies: odd but valid messages

ids = st.binary(min_size=0, max_size=20)
timestamps = st.one_of(st.just(0), st.integers(0, 2**64 - 1),
                       st.integers(1_700_000_000 * 10**9, 1_900_000_000 * 10**9))
texts = st.text(max_size=40)
doubles = st.floats(allow_nan=True, allow_infinity=True)
enum_values = st.integers(-3, 12)


def _any_value() -> st.SearchStrategy[common_pb2.AnyValue]:
    scalars = st.one_of(
        st.builds(lambda v: common_pb2.AnyValue(string_value=v), texts),
        st.builds(lambda v: common_pb2.AnyValue(bool_value=v), st.booleans()),
        st.builds(lambda v: common_pb2.AnyValue(int_value=v), st.integers(-(2**63), 2**63 - 1)),
        st.builds(lambda v: common_pb2.AnyValue(double_value=v), doubles),
        st.builds(lambda v: common_pb2.AnyValue(bytes_value=v), st.binary(max_size=16)),
        st.just(common_pb2.AnyValue()),
    )
    return st.recursive(scalars, lambda inner: st.one_of(
        st.builds(lambda vs: common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=vs)),
                  st.lists(inner, max_size=3)),
        st.builds(lambda kvs: common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=kvs)),
                  st.lists(st.builds(common_pb2.KeyValue, key=texts, value=inner), max_size=3)),
    ), max_leaves=8)


key_values = st.lists(st.builds(common_pb2.KeyValue, key=st.one_of(texts, st.sampled_from(
    ["service.name", "trace_id", "dt.trace_id", "My:Key", ""])), value=_any_value()), max_size=6)
resources = st.builds(resource_pb2.Resource, attributes=key_values)
scopes = st.builds(common_pb2.InstrumentationScope, name=texts, version=texts, attributes=key_values)

spans = st.builds(
    trace_pb2.Span, trace_id=ids, span_id=ids, parent_span_id=ids, name=texts, kind=enum_values,
    start_time_unix_nano=timestamps, end_time_unix_nano=timestamps, attributes=key_values,
    status=st.builds(trace_pb2.Status, code=enum_values, message=texts),
    events=st.lists(st.builds(trace_pb2.Span.Event, name=texts, time_unix_nano=timestamps, attributes=key_values),
                    max_size=2),
)
trace_requests = st.builds(trace_service_pb2.ExportTraceServiceRequest, resource_spans=st.lists(st.builds(
    trace_pb2.ResourceSpans, resource=resources,
    scope_spans=st.lists(st.builds(trace_pb2.ScopeSpans, scope=scopes, spans=st.lists(spans, max_size=4)),
                         max_size=2)), max_size=2))


def _number_point(value: float | int, attributes: Any, time_ns: int) -> metrics_pb2.NumberDataPoint:
    point = metrics_pb2.NumberDataPoint(attributes=attributes, time_unix_nano=time_ns)
    if isinstance(value, float):
        point.as_double = value
    else:
        point.as_int = value
    return point


number_points = st.builds(_number_point, st.one_of(doubles, st.integers(-(2**63), 2**63 - 1)), key_values,
                          timestamps)
histogram_points = st.builds(
    metrics_pb2.HistogramDataPoint, attributes=key_values, count=st.integers(0, 2**64 - 1),
    sum=doubles, bucket_counts=st.lists(st.integers(0, 2**64 - 1), max_size=5),
    explicit_bounds=st.lists(doubles, max_size=4), min=doubles, max=doubles)
exp_points = st.builds(metrics_pb2.ExponentialHistogramDataPoint, attributes=key_values,
                       count=st.integers(0, 100), sum=doubles, scale=st.integers(-10, 20))
summary_points = st.builds(metrics_pb2.SummaryDataPoint, attributes=key_values, count=st.integers(0, 100),
                           sum=doubles)
many_attributes = st.builds(lambda n: [common_pb2.KeyValue(key=f"d{i}", value=common_pb2.AnyValue(int_value=i))
                                       for i in range(n)], st.integers(45, 60))
metrics = st.one_of(
    st.builds(lambda name, pts: metrics_pb2.Metric(name=name, gauge=metrics_pb2.Gauge(data_points=pts)),
              texts, st.lists(number_points, max_size=3)),
    st.builds(lambda name, pts, t, m: metrics_pb2.Metric(name=name, sum=metrics_pb2.Sum(
        data_points=pts, aggregation_temporality=t, is_monotonic=m)),
        texts, st.lists(number_points, max_size=3), enum_values, st.booleans()),
    st.builds(lambda name, pts, t: metrics_pb2.Metric(name=name, histogram=metrics_pb2.Histogram(
        data_points=pts, aggregation_temporality=t)), texts, st.lists(histogram_points, max_size=2), enum_values),
    st.builds(lambda name, pts, t: metrics_pb2.Metric(
        name=name, exponential_histogram=metrics_pb2.ExponentialHistogram(data_points=pts,
                                                                          aggregation_temporality=t)),
        texts, st.lists(exp_points, max_size=2), enum_values),
    st.builds(lambda name, pts: metrics_pb2.Metric(name=name, summary=metrics_pb2.Summary(data_points=pts)),
              texts, st.lists(summary_points, max_size=2)),
    st.builds(lambda name, attrs: metrics_pb2.Metric(name=name, gauge=metrics_pb2.Gauge(
        data_points=[metrics_pb2.NumberDataPoint(as_double=1.0, attributes=attrs)])), texts, many_attributes),
    st.builds(lambda name: metrics_pb2.Metric(name=name), texts),  # no data at all
)
metric_requests = st.builds(metrics_service_pb2.ExportMetricsServiceRequest, resource_metrics=st.lists(st.builds(
    metrics_pb2.ResourceMetrics, resource=resources,
    scope_metrics=st.lists(st.builds(metrics_pb2.ScopeMetrics, scope=scopes, metrics=st.lists(metrics, max_size=4)),
                           max_size=2)), max_size=2))

log_records = st.builds(
    logs_pb2.LogRecord, time_unix_nano=timestamps, observed_time_unix_nano=timestamps,
    severity_number=enum_values, severity_text=texts, body=_any_value(), attributes=key_values,
    trace_id=ids, span_id=ids, flags=st.integers(0, 2**32 - 1))
log_requests = st.builds(logs_service_pb2.ExportLogsServiceRequest, resource_logs=st.lists(st.builds(
    logs_pb2.ResourceLogs, resource=resources,
    scope_logs=st.lists(st.builds(logs_pb2.ScopeLogs, scope=scopes, log_records=st.lists(log_records, max_size=4)),
                        max_size=2)), max_size=2))

REQUESTS: dict[str, st.SearchStrategy[Message]] = {"traces": trace_requests, "metrics": metric_requests,
                                                   "logs": log_requests}


# ------------------------------------------------------------------ properties


@FUZZ
@given(signal=st.sampled_from(SIGNALS), body=st.binary(max_size=3000), gzip_it=st.booleans(),
       content_type=st.sampled_from(["application/x-protobuf", "application/json", "text/plain", ""]),
       profile=st.sampled_from(["dynatrace", "otlp"]))
def test_random_bytes_never_cause_a_5xx(sinks: dict[str, SinkServer], http: httpx.Client, signal: str,
                                        body: bytes, gzip_it: bool, content_type: str, profile: str) -> None:
    _post(http, sinks[profile], signal, body, content_type, gzip_it)


@FUZZ
@given(signal=st.sampled_from(SIGNALS), data=st.data(), gzip_it=st.booleans(),
       profile=st.sampled_from(["dynatrace", "otlp"]))
def test_odd_valid_messages_are_answered_and_queryable(sinks: dict[str, SinkServer], http: httpx.Client,
                                                      signal: str, data: st.DataObject, gzip_it: bool,
                                                      profile: str) -> None:
    message = data.draw(REQUESTS[signal])
    response = _post(http, sinks[profile], signal, message.SerializeToString(), "application/x-protobuf", gzip_it)
    assert response.status_code == 200, response.content[:300]
    # everything stored must come back out of the query API as JSON
    client = sinks[profile].client
    assert isinstance({"traces": client.spans, "metrics": client.metric_points, "logs": client.logs}[signal](), list)


@FUZZ
@given(signal=st.sampled_from(SIGNALS), document=st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["resourceSpans", "resourceMetrics", "resourceLogs", "scopeSpans", "spans", "traceId", "logRecords",
         "body", "attributes", "stringValue", "x"]), inner, max_size=3)), max_leaves=10))
def test_random_json_on_the_otlp_profile_never_causes_a_5xx(sinks: dict[str, SinkServer], http: httpx.Client,
                                                           signal: str, document: Any) -> None:
    _post(http, sinks["otlp"], signal, json.dumps(document).encode(), "application/json")


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand (the runtime refuses to build such deep messages)."""
    length, size = b"", len(payload)
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            return bytes([number << 3 | 2]) + length + payload


def test_deep_nesting_is_refused_not_crashed(sinks: dict[str, SinkServer], http: httpx.Client) -> None:
    value = common_pb2.AnyValue(string_value="leaf").SerializeToString()
    for _ in range(150):  # beyond protobuf's default recursion limit of 100
        value = _field(5, _field(1, value))  # AnyValue.array_value -> ArrayValue.values
    # request.resource_logs -> ResourceLogs.scope_logs -> ScopeLogs.log_records -> LogRecord.body
    body = _field(1, _field(2, _field(2, _field(5, value))))
    for sink in sinks.values():
        assert _post(http, sink, "logs", body, "application/x-protobuf").status_code == 400
    deep_json = ("[" * 5000 + "]" * 5000).encode()
    assert _post(http, sinks["otlp"], "logs", deep_json, "application/json").status_code == 400


def test_fault_injection_is_the_only_5xx_and_memory_stays_bounded(sinks: dict[str, SinkServer],
                                                                   http: httpx.Client) -> None:
    """Self-contained (passes alone and in any order): it sends its own traffic, three times the cap per signal."""
    sink = sinks["otlp"]
    sink.client.inject_fault(status=503, count=1, signals=["traces"])
    assert http.post(sink.signal_url("traces"), content=b"",
                     headers={"Content-Type": "application/x-protobuf"}).status_code == 503
    bodies: dict[str, Message] = {
        "traces": traces_request([span(f"s{i}") for i in range(3 * CAP)]),
        "metrics": metrics_request([gauge_metric("fuzz.gauge", [float(i) for i in range(3 * CAP)])]),
        "logs": logs_request([log_record(f"line {i}") for i in range(3 * CAP)]),
    }
    for profile_sink in sinks.values():
        before = profile_sink.client.stats()
        for signal, message in bodies.items():
            assert _post(http, profile_sink, signal, message.SerializeToString(),
                         "application/x-protobuf").status_code == 200
        _assert_bounded(profile_sink)
        sizes, stats = profile_sink.client.health()["store"], profile_sink.client.stats()
        assert (sizes["spans"], sizes["metric_points"], sizes["logs"]) == (CAP, CAP, CAP)
        for signal in SIGNALS:
            assert stats[signal]["requests"] == before[signal]["requests"] + 1
            assert stats[signal]["dropped_for_cap"] >= before[signal]["dropped_for_cap"] + 2 * CAP
    assert math.isfinite(float(sinks["dynatrace"].client.stats()["traces"]["bytes"]))
