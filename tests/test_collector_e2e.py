"""The real collector, running the deployed config (derived for 127.0.0.1), between real producers and the sink.

Producers: the OpenTelemetry Python SDK (traces), a Prometheus exposition in Kong 3.9's format (metrics), a TCP line
in Kong's tcp-log shape (logs). The sink runs the dynatrace profile, so what it accepts Dynatrace would accept.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from otelgate.collector.testing import RunningCollector, collector_binary_or_skip, running_collector, serve_exposition
from otelgate.sink.server import SinkServer
from otelgate.sink.testing import fake_token

pytestmark = pytest.mark.collector

DEPLOYMENT = "kong-e2e"
WAIT_S = 30.0  # two 5s scrapes plus start-up, with room for a loaded 2-core machine


@pytest.fixture(scope="module")
def binary() -> Path:
    return collector_binary_or_skip()


@pytest.fixture
def token() -> str:
    return fake_token()


@pytest.fixture
def sink(token: str) -> Iterator[SinkServer]:
    with SinkServer(profile="dynatrace", token=token) as server:
        yield server


# ------------------------------------------------------------------------------------------------ Kong exposition
LATENCY_BUCKETS_MS = (25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000)  # kong_request_latency_ms
LABELS = 'service="coupon",route="coupon-route",workspace="default"'


class KongExposition:
    """Kong 3.9's /metrics text for one route; every scrape first "serves" ``REQUESTS_PER_SCRAPE`` more requests.

    Kong had served ``EARLIER_REQUESTS`` before the collector started (its counters are totals since Kong's start),
    and from the second scrape on one request per scrape answers 404, a series Kong creates only then.
    """

    REQUESTS_PER_SCRAPE: ClassVar[tuple[float, ...]] = (20.0, 60.0, 300.0)  # latencies (ms) of the new requests
    EARLIER_REQUESTS = 10

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scrapes = 0
        self.latencies: list[float] = [42.0] * self.EARLIER_REQUESTS
        self.not_found = 0

    def render(self) -> str:
        with self.lock:
            self.scrapes += 1
            self.latencies.extend(self.REQUESTS_PER_SCRAPE)
            self.not_found += 1 if self.scrapes >= 2 else 0
            count, total, not_found = len(self.latencies), sum(self.latencies), self.not_found
            buckets = [sum(1 for v in self.latencies if v <= le) for le in LATENCY_BUCKETS_MS]
        requests = 'kong_http_requests_total{service="coupon",route="coupon-route",code="%s",source="service",' \
                   'workspace="default",consumer=""} %d'
        lines = [
            "# HELP kong_datastore_reachable Datastore reachable from Kong, 0 is unreachable",
            "# TYPE kong_datastore_reachable gauge",
            "kong_datastore_reachable 1",
            "# HELP kong_http_requests_total HTTP status codes per consumer/service/route in Kong",
            "# TYPE kong_http_requests_total counter",
            requests % ("200", count),
            *([requests % ("404", not_found)] if not_found else []),
            "# HELP kong_request_latency_ms Total latency incurred during requests for each service/route in Kong",
            "# TYPE kong_request_latency_ms histogram",
            *(f'kong_request_latency_ms_bucket{{{LABELS},le="{le}"}} {n}' for le, n in zip(LATENCY_BUCKETS_MS, buckets,
                                                                                       strict=True)),
            f'kong_request_latency_ms_bucket{{{LABELS},le="+Inf"}} {count}',
            f"kong_request_latency_ms_count{{{LABELS}}} {count}",
            f"kong_request_latency_ms_sum{{{LABELS}}} {total:g}",
        ]
        return "\n".join(lines) + "\n"


@pytest.fixture
def kong_status() -> Iterator[tuple[str, KongExposition]]:
    exposition = KongExposition()
    with serve_exposition(exposition.render) as target:
        yield target, exposition


def _scraped(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(points, key=lambda p: int(p["time_unix_nano"]))


# ------------------------------------------------------------------------------------------------ traces
def test_sdk_spans_reach_the_sink_with_the_deployment_name(binary: Path, sink: SinkServer, token: str,
                                                           tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with running_collector(binary, tmp_path, sink_endpoint=sink.otlp_endpoint, token=token,
                           deployment_name=DEPLOYMENT, request=request) as collector:
        provider = TracerProvider(resource=Resource.create({"service.name": "collector-e2e"}))
        provider.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=f"{collector.otlp_http_url}/v1/traces", timeout=5)))
        tracer = provider.get_tracer("otelgate.tests")
        with tracer.start_as_current_span("parent") as parent, tracer.start_as_current_span("child"):
            trace_id = format(parent.get_span_context().trace_id, "032x")
        provider.shutdown()

        spans = sink.client.wait_for_trace(trace_id, min_spans=2, timeout=WAIT_S)

    assert sorted(span["name"] for span in spans) == ["child", "parent"]
    assert {span["attributes"].get("kong.deployment.name") for span in spans} == {DEPLOYMENT}
    assert {span["service_name"] for span in spans} == {"collector-e2e"}
    assert sink.client.rejections("traces") == []


# ------------------------------------------------------------------------------------------------ metrics
def test_kong_metrics_reach_the_sink_as_delta(binary: Path, sink: SinkServer, token: str, tmp_path: Path,
                                              kong_status: tuple[str, KongExposition],
                                              request: pytest.FixtureRequest) -> None:
    target, exposition = kong_status
    per_scrape = len(KongExposition.REQUESTS_PER_SCRAPE)
    with running_collector(binary, tmp_path, sink_endpoint=sink.otlp_endpoint, token=token, kong_status_target=target,
                           deployment_name=DEPLOYMENT, request=request):
        # scrape 1 is the baseline; scrapes 2 and 3 give the first two deltas of code 200, scrape 3 the first of 404
        points = sink.client.wait_until(
            lambda: sink.client.metric_points("kong_http_requests_total"),
            lambda found: len([p for p in found if p["attributes"]["code"] == "200"]) >= 2
            and any(p["attributes"]["code"] == "404" for p in found),
            what="two DELTA points of code 200 and one of code 404", timeout=WAIT_S)
        histograms = sink.client.wait_for_metric("kong_request_latency_ms", min_points=2, timeout=WAIT_S)

    counters = [p for p in points if p["attributes"]["code"] == "200"]
    for point in points:
        assert (point["type"], point["temporality"], point["monotonic"]) == ("sum", "DELTA", True), point
        assert point["attributes"]["kong.deployment.name"] == DEPLOYMENT
        assert point["attributes"]["route"] == "coupon-route"
    # Kong's earlier requests never show up as a delta (no over-count when the collector (re)starts) ...
    assert [p["value"] for p in counters] == [per_scrape] * len(counters), counters
    # ... and a series born after the collector started starts with its baseline too: only its increases count
    assert {p["value"] for p in points if p["attributes"]["code"] == "404"} == {1}
    for point in histograms:
        assert (point["type"], point["temporality"]) == ("histogram", "DELTA"), point
        assert point["count"] == per_scrape, point
        assert point["sum"] == pytest.approx(sum(KongExposition.REQUESTS_PER_SCRAPE)), point
        assert sum(point["bucket_counts"]) == point["count"]
        assert point["explicit_bounds"] == [float(b) for b in LATENCY_BUCKETS_MS]
    # consecutive deltas tile the time axis: each one starts where the previous ended
    ordered = _scraped(counters)
    for earlier, later in itertools.pairwise(ordered):
        assert int(later["start_unix_nano"]) == int(earlier["time_unix_nano"])
    assert exposition.scrapes >= 2
    assert sink.client.rejections("metrics") == []
    assert sink.client.stats()["metrics"]["rejected_items"] == 0


@pytest.mark.negative
def test_without_cumulative_to_delta_the_sink_rejects_kong_metrics(
        binary: Path, sink: SinkServer, token: str, tmp_path: Path, kong_status: tuple[str, KongExposition],
        request: pytest.FixtureRequest) -> None:
    target, _exposition = kong_status
    with running_collector(binary, tmp_path, sink_endpoint=sink.otlp_endpoint, token=token, kong_status_target=target,
                           deployment_name=DEPLOYMENT, drop_processors=("cumulative_to_delta",), request=request):
        rejections = sink.client.wait_until(
            lambda: {r["reason"] for r in sink.client.rejections("metrics")},
            lambda reasons: {"UNSUPPORTED_METRIC_TYPE_MONOTONIC_CUMULATIVE_SUM",
                             "UNSUPPORTED_METRIC_TYPE_CUMULATIVE_HISTOGRAM"} <= reasons,
            what="the sink to reject Kong's cumulative counter and histogram", timeout=WAIT_S)
    assert rejections
    rejected_names = {r["name"] for r in sink.client.rejections("metrics")}
    assert {"kong_http_requests_total", "kong_request_latency_ms"} <= rejected_names
    assert sink.client.metric_points("kong_http_requests_total") == []


# ------------------------------------------------------------------------------------------------ logs
def kong_tcp_log_line(trace_id: str) -> dict[str, Any]:
    """One request as Kong 3.9's tcp-log serializes it, with custom_fields_by_lua unwrapping trace_id."""
    started_at = int(time.time() * 1000)
    return {
        "request": {"id": "6c1f0e3a5b2d4f7e8a9b0c1d2e3f4a5b", "uri": "/coupon/coupons",
                    "url": "http://localhost:80/coupon/coupons", "querystring": {}, "method": "GET",
                    "headers": {"host": "localhost", "user-agent": "python-requests/2.32.3",
                                "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}, "size": 112},
        "upstream_uri": "/coupons", "upstream_status": "200",
        "response": {"status": 200, "size": 345, "headers": {"via": "1.1 kong/3.9.1"}},
        "latencies": {"kong": 1, "proxy": 3, "request": 5, "receive": 0},
        "tries": [{"balancer_start": started_at, "ip": "10.96.12.34", "port": 8080, "balancer_latency": 0}],
        "route": {"name": "coupon-route", "paths": ["/coupon"]}, "service": {"name": "coupon"},
        "client_ip": "10.244.0.1", "started_at": started_at, "source": "upstream",
        "workspace": "0b8f1f0e-0000-4000-8000-000000000000", "workspace_name": "default",
        "trace_id": trace_id,
    }


def test_kong_tcp_log_line_reaches_the_sink_linked_to_its_trace(binary: Path, sink: SinkServer, token: str,
                                                                tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    line = kong_tcp_log_line(trace_id)
    with running_collector(binary, tmp_path, sink_endpoint=sink.otlp_endpoint, token=token,
                           deployment_name=DEPLOYMENT, request=request) as collector:
        _send_tcp_line(collector, line)
        logs = sink.client.wait_for_logs(min_count=1, timeout=WAIT_S, trace_id=trace_id)

    assert len(logs) == 1, logs
    record = logs[0]
    assert record["trace_id"] == trace_id  # LogRecord.trace_id, set by trace_parser
    attributes = record["attributes"]
    assert attributes["trace_id"] == trace_id  # kept on purpose: Dynatrace's Kong guidance links through it
    # the dynatrace profile stores nested maps as dotted keys, as Dynatrace does
    assert attributes["request.uri"] == "/coupon/coupons"
    assert attributes["request.method"] == "GET"
    assert attributes["response.status"] == 200
    assert isinstance(attributes["response.status"], int)  # json_parser's parse_ints: Kong's numbers stay integers
    assert attributes["latencies.request"] == 5
    assert attributes["upstream_status"] == "200"
    assert attributes["route.name"] == "coupon-route"
    assert attributes["kong.deployment.name"] == DEPLOYMENT
    assert int(record["time_unix_nano"]) == line["started_at"] * 1_000_000  # json_parser's timestamp block
    assert record["resource"].get("service.name") == "kong"
    assert record["linkable"] is True
    assert sink.client.rejections("logs") == []


def _send_tcp_line(collector: RunningCollector, line: dict[str, Any]) -> None:
    # Kong's framing: cjson.encode(message) .. "\n", on a kept-alive connection
    with socket.create_connection(("127.0.0.1", collector.ports.tcplog), timeout=5) as conn:
        conn.sendall(json.dumps(line).encode() + b"\n")
