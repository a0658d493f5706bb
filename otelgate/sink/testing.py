"""Helpers for tests and benchmarks that talk to the sink: fake tokens and OTLP request builders."""

from __future__ import annotations

import gzip
import os
import secrets
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
_ALPHABET = string.ascii_uppercase + string.digits


def fake_token() -> str:
    """A random token in Dynatrace's format (dt0c01.<24>.<64>); valid only for a sink configured with it."""
    public = "".join(secrets.choice(_ALPHABET) for _ in range(24))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(64))
    return f"dt0c01.{public}.{secret}"


def any_value(value: Any) -> common_pb2.AnyValue:
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, bytes):
        return common_pb2.AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=key_values(value)))
    if isinstance(value, list | tuple):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[any_value(v) for v in value]))
    return common_pb2.AnyValue(string_value=str(value))


def key_values(attributes: Mapping[str, Any]) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def resource(service: str | None = "test-service", **extra: Any) -> resource_pb2.Resource:
    attributes = dict(extra)
    if service is not None:
        attributes["service.name"] = service
    return resource_pb2.Resource(attributes=key_values(attributes))


def new_trace_id() -> bytes:
    return os.urandom(16)


def new_span_id() -> bytes:
    return os.urandom(8)


def span(name: str = "op", trace_id: bytes | None = None, span_id: bytes | None = None, parent: bytes = b"",
         end_ns: int | None = None, duration_ns: int = 1_000_000, attributes: Mapping[str, Any] | None = None,
         kind: trace_pb2.Span.SpanKind.ValueType = trace_pb2.Span.SPAN_KIND_SERVER) -> trace_pb2.Span:
    end = time.time_ns() if end_ns is None else end_ns
    return trace_pb2.Span(
        trace_id=trace_id or new_trace_id(), span_id=span_id or new_span_id(), parent_span_id=parent, name=name,
        kind=kind, start_time_unix_nano=max(0, end - duration_ns), end_time_unix_nano=end,
        attributes=key_values(attributes or {}),
    )


def traces_request(spans: Sequence[trace_pb2.Span], service: str | None = "test-service",
                   **resource_attributes: Any) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource(service, **resource_attributes),
        scope_spans=[trace_pb2.ScopeSpans(scope=common_pb2.InstrumentationScope(name="otelgate.tests"),
                                          spans=spans)],
    )])


def number_point(value: float | int, attributes: Mapping[str, Any] | None = None) -> metrics_pb2.NumberDataPoint:
    now = time.time_ns()
    point = metrics_pb2.NumberDataPoint(start_time_unix_nano=now - 10**9, time_unix_nano=now,
                                        attributes=key_values(attributes or {}))
    if isinstance(value, int):
        point.as_int = value
    else:
        point.as_double = value
    return point


def sum_metric(name: str, values: Iterable[float | int] = (1,), monotonic: bool = True,
               temporality: metrics_pb2.AggregationTemporality.ValueType = DELTA,
               attributes: Mapping[str, Any] | None = None) -> metrics_pb2.Metric:
    return metrics_pb2.Metric(name=name, sum=metrics_pb2.Sum(
        data_points=[number_point(v, attributes) for v in values], aggregation_temporality=temporality,
        is_monotonic=monotonic))


def gauge_metric(name: str, values: Iterable[float | int] = (1.0,),
                 attributes: Mapping[str, Any] | None = None) -> metrics_pb2.Metric:
    return metrics_pb2.Metric(name=name, gauge=metrics_pb2.Gauge(
        data_points=[number_point(v, attributes) for v in values]))


def histogram_metric(name: str, bounds: Sequence[float] = (1.0, 5.0), counts: Sequence[int] = (1, 2, 0),
                     temporality: metrics_pb2.AggregationTemporality.ValueType = DELTA) -> metrics_pb2.Metric:
    now = time.time_ns()
    point = metrics_pb2.HistogramDataPoint(start_time_unix_nano=now - 10**9, time_unix_nano=now,
                                           count=sum(counts), sum=4.0, bucket_counts=counts,
                                           explicit_bounds=bounds)
    return metrics_pb2.Metric(name=name, histogram=metrics_pb2.Histogram(data_points=[point],
                                                                        aggregation_temporality=temporality))


def summary_metric(name: str) -> metrics_pb2.Metric:
    point = metrics_pb2.SummaryDataPoint(time_unix_nano=time.time_ns(), count=3, sum=6.0)
    return metrics_pb2.Metric(name=name, summary=metrics_pb2.Summary(data_points=[point]))


def metrics_request(metrics: Sequence[metrics_pb2.Metric], service: str | None = "test-service"
                    ) -> metrics_service_pb2.ExportMetricsServiceRequest:
    return metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=resource(service),
        scope_metrics=[metrics_pb2.ScopeMetrics(scope=common_pb2.InstrumentationScope(name="otelgate.tests"),
                                                metrics=metrics)],
    )])


def log_record(body: Any = "hello", trace_id: bytes = b"", span_id: bytes = b"",
               attributes: Mapping[str, Any] | None = None, time_ns: int | None = None) -> logs_pb2.LogRecord:
    return logs_pb2.LogRecord(time_unix_nano=time.time_ns() if time_ns is None else time_ns,
                              severity_number=logs_pb2.SEVERITY_NUMBER_INFO, severity_text="INFO",
                              body=any_value(body), attributes=key_values(attributes or {}),
                              trace_id=trace_id, span_id=span_id)


def logs_request(records: Sequence[logs_pb2.LogRecord], service: str | None = "test-service"
                 ) -> logs_service_pb2.ExportLogsServiceRequest:
    return logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        resource=resource(service),
        scope_logs=[logs_pb2.ScopeLogs(scope=common_pb2.InstrumentationScope(name="otelgate.tests"),
                                       log_records=records)],
    )])


def kong_like_batch(size: int, end_ns: int | None = None) -> bytes:
    """``size`` spans shaped like Kong 3.9's opentelemetry plugin output: per request a ``kong`` root with the
    plugin's HTTP attributes and a few phase spans, 8 spans per trace, resource ``service.name=kong``."""
    spans = []
    now = time.time_ns() if end_ns is None else end_ns
    trace_id, root = new_trace_id(), b""
    for i in range(size):
        phase = i % 8
        if phase == 0:
            trace_id, root = new_trace_id(), new_span_id()
            current = span("kong", trace_id=trace_id, span_id=root, end_ns=now, duration_ns=4_000_000, attributes={
                "http.method": "GET", "http.url": f"http://kong.demo:8000/coupon/{i}", "http.host": "kong.demo",
                "http.scheme": "http", "http.flavor": "1.1", "http.client_ip": "10.244.0.17",
                "net.peer.ip": "10.244.0.17", "kong.request.id": os.urandom(16).hex(),
                "http.status_code": 200, "http.route": "/coupon"})
        else:
            name, attributes = _PHASES[phase]
            current = span(name, trace_id=trace_id, parent=root, end_ns=now, duration_ns=200_000,
                           attributes=attributes)
        spans.append(current)
    request = traces_request(spans, service="kong", **{"service.instance.id": "7b8cbd0e-9f1c-4f3e-a6b1-1f0c2d3e4f50",
                                                       "service.version": "3.9.1"})
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            scope_spans.scope.name, scope_spans.scope.version = "kong-internal", "0.1.0"
    return bytes(request.SerializeToString())


_PHASES: dict[int, tuple[str, dict[str, Any]]] = {
    1: ("kong.router", {}),
    2: ("kong.access.plugin.opentelemetry", {}),
    3: ("kong.access.plugin.prometheus", {}),
    4: ("kong.dns", {"dns.record.domain": "coupon.demo.svc", "dns.record.port": 8080.0,
                     "dns.record.ip": "10.96.12.7"}),
    5: ("kong.balancer", {"try_count": 1.0, "net.peer.ip": "10.96.12.7", "net.peer.port": 8080.0,
                          "http.status_code": 200, "net.peer.name": "coupon.demo.svc"}),
    6: ("kong.header_filter.plugin.opentelemetry", {}),
    7: ("kong.body_filter.plugin.prometheus", {}),
}


def post_otlp(url: str, body: bytes | Any, token: str | None = None, *, content_type: str = "application/x-protobuf",
              compress: bool = False, headers: Mapping[str, str] | None = None, timeout: float = 10.0,
              client: httpx.Client | None = None) -> httpx.Response:
    """POST an export request (a message or raw bytes) the way an OTLP/HTTP exporter does."""
    data = body if isinstance(body, bytes) else body.SerializeToString()
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Api-Token {token}"
    if compress:
        data = gzip.compress(data, compresslevel=1)
        all_headers["Content-Encoding"] = "gzip"
    return (client or _shared_client()).post(url, content=data, headers=all_headers, timeout=timeout)


_SHARED: list[httpx.Client] = []


def _shared_client() -> httpx.Client:
    """One client for all helper calls: building a client (its TLS context) costs tens of milliseconds."""
    if not _SHARED:
        _SHARED.append(httpx.Client())
    return _SHARED[0]
