"""The metrics claim's histogram count on what the real collector (otelgate's build, the deployed config derived for
127.0.0.1) exports when Kong's latency histogram gains a bucket: the lost window is found from the grown bounds,
its requests from the request counter, and the count is exact to the request.

Kong exposes a bucket only once a request fell into it (Kong/kong@3.9.1 kong/plugins/prometheus/prometheus.lua:
607-619); cumulative_to_delta drops the point whose bounds changed (opentelemetry-collector-contrib@v0.161.0
processor/cumulativetodeltaprocessor/internal/tracking/tracker.go:202-210)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otelgate import claims
from otelgate.collector.config import CollectorPorts, derive_local_config, load_collector_resource, local_env
from otelgate.collector.process import CollectorProcess
from otelgate.collector.testing import (
    attach_log_on_failure,
    collector_binary_or_skip,
    kong_latency_histogram,
    serve_exposition,
)
from otelgate.expect.errors import ExpectationFailed
from otelgate.expect.metrics import HistogramWindowLost
from otelgate.sink.server import SinkServer
from otelgate.sink.testing import fake_token

pytestmark = pytest.mark.collector

ROUTE = claims.METRICS_ROUTE.kong_route
SCRAPES_WANTED = 5  # histogram points exported: scrape 1 is cumulative_to_delta's baseline, scrape 3 grows


class KongRoute:
    """One route's request counter and latency histogram as Kong exposes them; 2 requests per scrape, one of them
    at the third scrape faster than any before (a bucket is born)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = [300.0] * 5
        self.scrapes = 0

    def render(self) -> str:
        with self.lock:
            self.scrapes += 1
            self.latencies += [20.0, 300.0] if self.scrapes == 3 else [300.0, 300.0]
            route = f'service="pricing",route="{ROUTE}",workspace="default"'
            total = len(self.latencies)
            lines = ["# TYPE kong_http_requests_total counter",
                     f'kong_http_requests_total{{service="pricing",route="{ROUTE}",code="200",source="service",'
                     f'workspace="default",consumer=""}} {total}',
                     "# TYPE kong_request_latency_ms histogram"]
            lines += kong_latency_histogram(route, self.latencies)
        return "\n".join(lines) + "\n"


@pytest.fixture
def kong_status() -> Iterator[str]:
    exposition = KongRoute()
    with serve_exposition(exposition.render) as target:
        yield target


def exported_points(tmp_path: Path, target: str, request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    binary = collector_binary_or_skip()
    token = fake_token()
    resource = load_collector_resource()
    with SinkServer(profile="dynatrace", token=token) as sink:
        config = derive_local_config(resource["spec"]["config"], ports=CollectorPorts.allocate(),
                                     sink_endpoint=sink.otlp_endpoint, kong_status_target=target)
        process = CollectorProcess(binary, config, tmp_path, env=local_env(resource, token))
        with attach_log_on_failure(process, request):
            process.start()
            try:
                process.wait_healthy(timeout=30.0)
                # the window lost at scrape 3 leaves SCRAPES_WANTED - 1 histogram points after the baseline
                sink.client.wait_for_metric(claims.LATENCY_HISTOGRAM, min_points=SCRAPES_WANTED - 2, timeout=60.0)
                return [dict(p) for p in sink.client.metric_points()]
            finally:
                process.stop()


def test_the_window_a_bucket_is_born_in_is_subtracted_as_the_counter_measured_it(
        tmp_path: Path, kong_status: str, request: pytest.FixtureRequest) -> None:
    points = exported_points(tmp_path, kong_status, request)
    histogram = sorted((p for p in points if p["name"] == claims.LATENCY_HISTOGRAM),
                       key=lambda p: int(p["time_unix_nano"]))
    last = int(histogram[-1]["time_unix_nano"])
    points = [p for p in points if int(p["time_unix_nano"]) <= last]  # the counter may be a scrape ahead
    baseline = int(histogram[0]["start_unix_nano"])  # cumulative_to_delta's baseline scrape
    sent = int(sum(float(p["value"]) for p in points if p["name"] == claims.REQUEST_COUNTER))
    assert sent == 2 * (len(histogram) + 1), f"the counter is exact and contiguous: {points}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        claims.check_histogram_count(points, baseline, ROUTE, sent)
    reports = [str(w.message) for w in caught if issubclass(w.category, HistogramWindowLost)]
    assert len(reports) == 1 and "le=25" in reports[0] and "saw 2 request(s)" in reports[0], reports
    with pytest.raises(ExpectationFailed) as failed:  # one request more than the lost window held is not excused
        claims.check_histogram_count(points, baseline, ROUTE, sent + 1)
    assert failed.value.cause == "COUNT_MISMATCH"
