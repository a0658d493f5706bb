"""Why the collector's metrics pipeline has no ``metric_start_time`` processor, although Dynatrace's Prometheus
pipeline (https://docs.dynatrace.com/docs/shortlink/otel-collector-cases-prometheus) puts one before
``cumulative_to_delta``: Kong exposes a histogram bucket only once a request fell into it
(Kong/kong@3.9.1 kong/plugins/prometheus/prometheus.lua:607-619 increments the buckets with value <= bound, creating
their keys), so a faster request than any before ADDS buckets; metric_start_time's true_reset_point strategy takes a
change of bucket bounds for a counter reset (contrib v0.161.0 processor/metricstarttimeprocessor/internal/
datapointstorage/timeseries_map.go:173-178) and keeps the first bounds for good (internal/truereset/adjuster.go:110,
132), so every later scrape restarts the series and the sink receives the series' whole history again.

Without it the collector still cannot count the interval in which Kong adds a bucket (cumulative_to_delta drops
that point), but it never over-counts. Both runs use the real collector (otelgate's build) with the deployed config
derived for 127.0.0.1, scraping a Kong exposition whose bucket set grows at the third scrape."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otelgate.collector.config import CollectorPorts, derive_local_config, load_collector_resource, local_env
from otelgate.collector.process import CollectorProcess
from otelgate.collector.testing import (
    attach_log_on_failure,
    collector_binary_or_skip,
    kong_latency_histogram,
    serve_exposition,
)
from otelgate.sink.server import SinkServer
from otelgate.sink.testing import fake_token

pytestmark = pytest.mark.collector

LABELS = 'service="pricing",route="pricing-route",workspace="default"'
EARLIER = 10           # requests Kong served before the collector started, all slow (300 ms)
PER_SCRAPE = 2         # requests between two scrapes; from the third scrape on one of them is fast (20 ms)
WAIT_S = 45.0


class GrowingHistogram:
    """Kong's exposition of one route's latency histogram: only the buckets a request fell into exist."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies = [300.0] * EARLIER
        self.scrapes = 0

    def render(self) -> str:
        with self.lock:
            self.scrapes += 1
            self.latencies += [20.0, 300.0] if self.scrapes >= 3 else [300.0] * PER_SCRAPE
            lines = ["# TYPE kong_request_latency_ms histogram"]
            lines += kong_latency_histogram(LABELS, self.latencies)
        return "\n".join(lines) + "\n"


@pytest.fixture
def kong_status() -> Iterator[tuple[str, GrowingHistogram]]:
    exposition = GrowingHistogram()
    with serve_exposition(exposition.render) as target:
        yield target, exposition


def histogram_points(tmp_path: Path, target: str, *, with_metric_start_time: bool,
                     request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The DELTA histogram points the sink receives over scrapes 2-5 (scrape 1 is cumulative_to_delta's baseline)."""
    binary = collector_binary_or_skip()
    token = fake_token()
    resource = load_collector_resource()
    with SinkServer(profile="dynatrace", token=token) as sink:
        config = derive_local_config(resource["spec"]["config"], ports=CollectorPorts.allocate(),
                                     sink_endpoint=sink.otlp_endpoint, kong_status_target=target)
        if with_metric_start_time:  # Dynatrace's order: right before cumulative_to_delta
            config["processors"]["metric_start_time"] = {"strategy": "true_reset_point"}
            processors = config["service"]["pipelines"]["metrics"]["processors"]
            processors.insert(processors.index("cumulative_to_delta"), "metric_start_time")
        process = CollectorProcess(binary, config, tmp_path, env=local_env(resource, token))
        with attach_log_on_failure(process, request):
            process.start()
            try:
                process.wait_healthy(timeout=30.0)
                return sink.client.wait_for_metric("kong_request_latency_ms", min_points=4, timeout=WAIT_S)
            finally:
                process.stop()


def test_deployed_pipeline_never_over_counts_and_drops_only_the_window_a_bucket_appears_in(
        tmp_path: Path, kong_status: tuple[str, GrowingHistogram], request: pytest.FixtureRequest) -> None:
    """Without metric_start_time every exported delta is exact. The one cost of Kong's growing bucket set:
    cumulative_to_delta drops the point whose bucket bounds differ from the previous one and starts over from it
    (contrib v0.161.0 processor/cumulativetodeltaprocessor/internal/tracking/tracker.go:202-210, "some data will be
    dropped"), so the interval in which a new bucket appeared is missing for that series, once per new bucket."""
    target, _exposition = kong_status
    points = histogram_points(tmp_path, target, with_metric_start_time=False, request=request)
    resource = load_collector_resource()
    assert "metric_start_time" not in resource["spec"]["config"]["service"]["pipelines"]["metrics"]["processors"]
    assert [p["count"] for p in points] == [PER_SCRAPE] * len(points), points
    assert all(p["temporality"] == "DELTA" for p in points)
    ordered = sorted(points, key=lambda p: int(p["time_unix_nano"]))
    grew = next(i for i, p in enumerate(ordered) if len(p["explicit_bounds"]) > len(ordered[0]["explicit_bounds"]))
    gaps = [i for i in range(1, len(ordered)) if ordered[i]["start_unix_nano"] != ordered[i - 1]["time_unix_nano"]]
    assert gaps == [grew], f"one window lost, where the bounds grew: {ordered}"


def test_metric_start_time_would_resend_the_whole_history(
        tmp_path: Path, kong_status: tuple[str, GrowingHistogram], request: pytest.FixtureRequest) -> None:
    """Pins the upstream behaviour the pipeline avoids; if this starts failing, the processor may be usable now."""
    target, _exposition = kong_status
    points = histogram_points(tmp_path, target, with_metric_start_time=True, request=request)
    counts = [p["count"] for p in points]
    assert counts[0] == PER_SCRAPE, counts
    assert max(counts) > EARLIER, f"expected a point carrying the whole history after the bounds grew: {counts}"
