"""The metrics claim's histogram count on recorded points (no processes): a window lost when Kong exposed a new
bucket is subtracted exactly as the request counter measured it, and reported; any other gap or difference fails.

Why such windows exist: Kong exposes a histogram bucket only once a request landed in it
(Kong/kong@3.9.1 kong/plugins/prometheus/prometheus.lua:607-619) and cumulative_to_delta drops the point whose bounds
changed (opentelemetry-collector-contrib@v0.161.0 processor/cumulativetodeltaprocessor/internal/tracking/
tracker.go:202-210); tests/test_metric_start_time.py shows it with the real collector."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest

from otelgate import claims
from otelgate.expect.errors import ExpectationFailed
from otelgate.expect.metrics import HistogramWindowLost, histogram_gaps
from otelgate.stacks.base import StackSettings
from otelgate.traffic import Traffic

ROUTE = claims.METRICS_ROUTE.kong_route
S = 5_000_000_000  # the scrape interval
T0 = 1_795_827_040_000_000_000  # the baseline scrape
BOUNDS = [1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0]


def labels(**extra: str) -> dict[str, Any]:
    return {claims.ROUTE_LABEL: ROUTE, "service": "pricing", "kong.deployment.name": "kong-fake", **extra}


def histogram(window: int, count: int, bounds: list[float], t0: int = T0, step: int = S) -> dict[str, Any]:
    """The histogram point of scrape window ``window`` (0 ends at the baseline ``t0``)."""
    return {"name": claims.LATENCY_HISTOGRAM, "type": "histogram", "temporality": "DELTA", "attributes": labels(),
            "start_unix_nano": t0 + (window - 1) * step, "time_unix_nano": t0 + window * step, "count": count,
            "explicit_bounds": list(bounds), "bucket_counts": [0] * len(bounds) + [count]}


def counter(window: int, value: int, code: str = "200", t0: int = T0, step: int = S) -> dict[str, Any]:
    return {"name": claims.REQUEST_COUNTER, "type": "sum", "monotonic": True, "temporality": "DELTA",
            "attributes": labels(code=code), "start_unix_nano": t0 + (window - 1) * step,
            "time_unix_nano": t0 + window * step, "value": value}


def counted(*values: int) -> list[dict[str, Any]]:
    """The request counter's windows 0.. with these deltas (contiguous, as the counter is)."""
    return [counter(window, value) for window, value in enumerate(values)]


GROWN = [*BOUNDS, 70.0, 80.0]  # two buckets born in window 1


def judge(points: list[dict[str, Any]], requests: int = 20) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        claims.check_histogram_count(points, T0, ROUTE, requests)
    return [w for w in caught if issubclass(w.category, HistogramWindowLost)]


def test_no_gap_and_the_exact_count_passes_without_a_report() -> None:
    points = [histogram(0, 1, BOUNDS), histogram(1, 12, BOUNDS), histogram(2, 8, BOUNDS), *counted(1, 12, 8)]
    assert judge(points) == []


def test_a_window_lost_to_a_bucket_birth_is_subtracted_exactly_and_reported() -> None:
    # window 1 (4 requests, one of them the first above 60 ms) never arrived; window 2 carries the new bounds
    points = [histogram(0, 1, BOUNDS), histogram(2, 16, GROWN), *counted(1, 4, 16)]
    reports = judge(points)
    assert len(reports) == 1
    text = str(reports[0].message)
    assert "le=70, le=80" in text and f"[{T0}, {T0 + S}]" in text and "saw 4 request(s)" in text
    assert "prometheus.lua:607-619" in text and "tracker.go:202-210" in text


def test_the_point_ending_at_the_baseline_anchors_a_gap_right_after_it() -> None:
    # the dump of the failing run: the histogram's point ending at the baseline, then the lost window
    points = [histogram(-1, 3, BOUNDS), histogram(0, 1, BOUNDS), histogram(2, 0, GROWN), histogram(3, 0, GROWN),
              *counted(1, 20, 0, 0)]
    assert len(judge(points)) == 1


def test_a_bucket_birth_whose_lost_window_held_n_requests_does_not_excuse_n_plus_one() -> None:
    points = [histogram(0, 1, BOUNDS), histogram(2, 15, GROWN), *counted(1, 4, 16)]
    with pytest.raises(ExpectationFailed) as failed:
        judge(points)
    assert failed.value.cause == "COUNT_MISMATCH"
    assert (failed.value.evidence.expected, failed.value.evidence.seen) == (16, 15)
    assert "20 sent - 4 in windows lost to bucket births" in failed.value.message
    assert any("le=70" in line for line in failed.value.evidence.facts["lost_to_bucket_births"])


def test_a_gap_without_a_bucket_birth_fails_even_when_nothing_else_is_off() -> None:
    points = [histogram(0, 1, BOUNDS), histogram(2, 16, BOUNDS), *counted(1, 4, 16)]
    with pytest.raises(ExpectationFailed) as failed:
        judge(points)
    assert failed.value.cause == "COUNT_MISMATCH"
    assert "not explained" in failed.value.message
    assert "no bucket birth" in failed.value.evidence.facts["unexplained_gaps"][0]


def test_changed_bounds_that_do_not_extend_the_old_ones_are_no_bucket_birth() -> None:
    points = [histogram(0, 1, BOUNDS), histogram(2, 16, [*BOUNDS[1:], 70.0]), *counted(1, 4, 16)]
    with pytest.raises(ExpectationFailed, match="not explained"):
        judge(points)


def test_a_bucket_birth_the_counter_does_not_cover_exactly_stays_unexplained() -> None:
    # the counter itself has no window for the lost interval: how many requests it held is unknown
    points = [histogram(0, 1, BOUNDS), histogram(2, 16, GROWN), counter(0, 1), counter(2, 16)]
    with pytest.raises(ExpectationFailed, match="not explained") as failed:
        judge(points)
    assert "does not cover it exactly" in failed.value.evidence.facts["unexplained_gaps"][0]


def test_the_lost_requests_count_every_status_code_of_the_route() -> None:
    # the histogram counts all of the route's requests, so the lost window's 200s and 500s are both subtracted
    points = [histogram(0, 1, BOUNDS), histogram(2, 16, GROWN), *counted(1, 3, 16),
              counter(0, 0, "500"), counter(1, 1, "500"), counter(2, 0, "500")]
    (report,) = judge(points)
    assert "saw 4 request(s)" in str(report.message)


def test_no_histogram_window_after_the_baseline_fails() -> None:
    with pytest.raises(ExpectationFailed, match="no window after the baseline") as failed:
        judge([histogram(0, 1, BOUNDS), *counted(1, 20)])
    assert failed.value.cause == "COUNT_MISMATCH"


def test_gaps_are_found_per_series() -> None:
    other = histogram(2, 16, BOUNDS)
    other["attributes"] = labels(service="other")
    explained, unexplained = histogram_gaps([histogram(1, 4, BOUNDS), histogram(2, 16, BOUNDS), other],
                                            counted(1, 4, 16))
    assert (explained, unexplained) == ([], [])


@dataclass
class ScrapingSink:
    """Recorded points, each visible once the wall clock passed its time, as scrapes reach a sink."""

    points: list[dict[str, Any]]

    def metric_points(self, name: str | None = None) -> list[dict[str, Any]]:
        now = time.time_ns()
        return [p for p in self.points if p["time_unix_nano"] <= now and name in (None, p["name"])]

    def rejections(self, signal: str | None = None) -> list[dict[str, Any]]:
        return []

    def logs(self) -> list[dict[str, Any]]:
        """The access logs of the traffic ``sent`` sends (the claim's bandwidth check reads their sizes; 0 bytes:
        Kong's prometheus plugin counts no bandwidth for them, and no bandwidth points are recorded)."""
        return [{"attributes": {"request.id": f"r{i}", "started_at": 1, "request.size": 0, "response.size": 0}}
                for i in range(20)]

    def stats(self) -> dict[str, Any]:
        return {"metric_points": len(self.points)}


@dataclass
class ScrapedStack:
    sink: ScrapingSink
    settings: StackSettings = field(default_factory=StackSettings)
    gateway_url: str = "http://gateway.invalid"
    kong_deployment_name: str = "kong-fake"
    timing: claims.Timing = field(default_factory=lambda: claims.Timing(signal=2.0, settle=0.6, scrape=3.0))


def sent(gateway_url: str, path: str, count: int = 1, **_: Any) -> Traffic:
    traffic = Traffic(path=path, started_ns=time.time_ns())
    traffic.request_ids = [f"r{i}" for i in range(count)]
    traffic.statuses = [200] * count
    traffic.ended_ns = time.time_ns()
    return traffic


def test_the_claim_waits_for_the_point_that_proves_a_bucket_birth_and_passes_reporting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the failing run's shape: all 20 requests fell in the window whose histogram point was dropped; the claim
    # sees it only once the next scrape (grown bounds) arrives, one wait later
    monkeypatch.setattr(claims, "send", sent)
    t0, step = time.time_ns() - 500_000_000, 2_000_000_000
    points = [histogram(0, 1, BOUNDS, t0, step), histogram(2, 0, GROWN, t0, step),
              *(counter(w, v, "200", t0, step) for w, v in enumerate((1, 20, 0)))]
    with pytest.warns(HistogramWindowLost, match="saw 20 request"):
        claims.check_metrics_delta_and_counts(ScrapedStack(ScrapingSink(points)), requests=20)  # type: ignore[arg-type]
