"""Acceptance: the real OpenTelemetry Python SDK and its OTLP/HTTP exporters against the fake Dynatrace sink."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler  # SDK 1.39.1 (the Operator 0.148 image set)
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otelgate.sink.server import SinkServer
from otelgate.sink.testing import fake_token

SERVICE = "sdk-acceptance"


@pytest.fixture(scope="module")
def token() -> str:
    return fake_token()


@pytest.fixture(scope="module")
def sink(token: str) -> Iterator[SinkServer]:
    with SinkServer(profile="dynatrace", token=token) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(sink: SinkServer) -> None:
    sink.client.reset()


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Api-Token {token}"}


def test_sdk_spans_land_and_are_queryable(sink: SinkServer, token: str) -> None:
    exporter = OTLPSpanExporter(endpoint=sink.signal_url("traces"), headers=_headers(token),
                                compression=Compression.Gzip, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("acceptance")
    with tracer.start_as_current_span("parent", attributes={"http.method": "GET"}) as parent, \
            tracer.start_as_current_span("child"):
        trace_id = format(parent.get_span_context().trace_id, "032x")
    provider.shutdown()  # flushes the spans (SimpleSpanProcessor sent them already)

    spans = sink.client.wait_for_trace(trace_id, min_spans=2, timeout=10)
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"parent", "child"}
    assert by_name["child"]["parent_span_id"] == by_name["parent"]["span_id"]
    assert by_name["parent"]["service_name"] == SERVICE
    assert by_name["parent"]["attributes"] == {"http.method": "GET"}
    assert by_name["parent"]["kind"] == "INTERNAL"
    assert sink.client.spans(service=SERVICE, attrs={"http.method": "GET"})[0]["name"] == "parent"
    stats = sink.client.stats()["traces"]
    assert stats["items"] == 2 and stats["accepted_requests"] == 2 and stats["rejected_items"] == 0


def test_sdk_logs_land_linked_to_their_trace(sink: SinkServer, token: str) -> None:
    log_provider = LoggerProvider(resource=Resource.create({"service.name": SERVICE}))
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(
        OTLPLogExporter(endpoint=sink.signal_url("logs"), headers=_headers(token), timeout=10)))
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    logger = logging.getLogger("otelgate.tests.sdk")
    logger.propagate = False
    handler = LoggingHandler(level=logging.INFO, logger_provider=log_provider)
    logger.addHandler(handler)
    try:
        with tracer_provider.get_tracer("acceptance").start_as_current_span("work") as current:
            logger.warning("coupon applied", extra={"coupon.code": "SAVE10"})
            trace_id = format(current.get_span_context().trace_id, "032x")
        logger.warning("outside any span")
    finally:
        logger.removeHandler(handler)
        log_provider.shutdown()

    records = sink.client.wait_for_logs(min_count=1, trace_id=trace_id, timeout=10)
    assert records[0]["body"] == "coupon applied"
    assert records[0]["attributes"]["coupon.code"] == "SAVE10"
    assert records[0]["linkable"] is True and records[0]["trace_id"] == trace_id
    assert records[0]["severity_text"] == "WARN"
    everything = sink.client.wait_for_logs(min_count=2, timeout=10)
    outside = [r for r in everything if r["body"] == "outside any span"]
    assert outside and outside[0]["linkable"] is False and outside[0]["trace_id"] == ""


def _meter_provider(sink: SinkServer, token: str, delta: bool) -> tuple[MeterProvider, OTLPMetricExporter]:
    temporality: dict[type, AggregationTemporality] | None = None
    if delta:
        temporality = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA,
                       UpDownCounter: AggregationTemporality.CUMULATIVE}
    exporter = OTLPMetricExporter(endpoint=sink.signal_url("metrics"), headers=_headers(token), timeout=10,
                                  preferred_temporality=temporality)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    return MeterProvider(metric_readers=[reader],
                         resource=Resource.create({"service.name": SERVICE})), exporter


def test_sdk_cumulative_metrics_are_rejected_by_partial_success(sink: SinkServer, token: str) -> None:
    provider, _exporter = _meter_provider(sink, token, delta=False)
    meter = provider.get_meter("acceptance")
    meter.create_counter("coupon.requests").add(3, {"route": "/coupon"})
    meter.create_histogram("coupon.latency").record(12.5)
    meter.create_up_down_counter("coupon.inflight").add(2)
    provider.shutdown()  # collects and exports once

    rejections = sink.client.wait_for_rejections("metrics", min_count=2, timeout=10)
    by_name = {r["name"]: r for r in rejections}
    assert by_name["coupon.requests"]["reason"] == "UNSUPPORTED_METRIC_TYPE_MONOTONIC_CUMULATIVE_SUM"
    assert by_name["coupon.requests"]["message"] == (
        "Unsupported metric: 'coupon.requests' - Reason: UNSUPPORTED_METRIC_TYPE_MONOTONIC_CUMULATIVE_SUM")
    assert by_name["coupon.requests"]["http_status"] == 200 and by_name["coupon.requests"]["items"] == 1
    assert by_name["coupon.latency"]["reason"] == "UNSUPPORTED_METRIC_TYPE_CUMULATIVE_HISTOGRAM"
    assert sink.client.metric_points("coupon.requests") == []
    # a cumulative UpDownCounter is accepted (Dynatrace treats it as a gauge)
    assert [p["value"] for p in sink.client.metric_points("coupon.inflight")] == [2]
    stats = sink.client.stats()["metrics"]
    assert stats["rejected_items"] == 2 and stats["items"] == 1 and stats["accepted_requests"] >= 1


def test_sdk_delta_metrics_are_accepted(sink: SinkServer, token: str) -> None:
    provider, _exporter = _meter_provider(sink, token, delta=True)
    meter = provider.get_meter("acceptance")
    meter.create_counter("coupon.requests").add(3, {"route": "/coupon", "HTTP:Code": 200})
    meter.create_histogram("coupon.latency").record(12.5)
    provider.shutdown()  # collects and exports once

    points = sink.client.wait_for_metric("coupon.requests", timeout=10)
    assert points[0]["temporality"] == "DELTA" and points[0]["monotonic"] is True and points[0]["value"] == 3
    # Dynatrace dimension normalisation: lowercase, invalid characters -> "_", values as strings
    assert points[0]["attributes"] == {"route": "/coupon", "http_code": "200"}
    histogram = sink.client.wait_for_metric("coupon.latency", timeout=10)[0]
    assert histogram["type"] == "histogram" and histogram["count"] == 1 and histogram["sum"] == 12.5
    assert sink.client.rejections("metrics") == []
    assert sink.client.stats()["metrics"]["rejected_items"] == 0
