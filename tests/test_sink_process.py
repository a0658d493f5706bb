"""The sink reports its own CPU and memory (``GET /api/process``), and the sampling report says when the sink, not
the pipeline, limited a rate."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest

from loadtests.measure import SINK_BUSY_PERCENT, SinkProbe, sink_limit_note
from otelgate.reports import sampling as report
from otelgate.sink.server import SinkServer
from otelgate.sink.testing import fake_token, kong_like_batch
from otelgate.sink.workers import INLINE_BELOW

TOKEN = fake_token()


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkServer]:
    with SinkServer(profile="dynatrace", token=TOKEN, workers=1) as server:
        yield server


def test_the_sink_reports_its_own_cpu_and_memory(sink: SinkServer) -> None:
    first = sink.client.process()
    assert first["pid"] == os.getpid()  # in-process sink: this process
    assert first["workers"] == 1 and first["workers_rss_bytes"] > 0  # started with the sink, before any request
    assert first["rss_bytes"] > 10 * 2**20 and first["cpu_seconds"] > 0
    body = kong_like_batch(2048)
    assert len(body) >= INLINE_BELOW
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            response = client.post(sink.signal_url("traces"), content=body, headers={
                "Content-Type": "application/x-protobuf", "Authorization": f"Api-Token {TOKEN}"})
            assert response.status_code == 200
    second = sink.client.process()
    assert second["workers"] == 1 and second["workers_rss_bytes"] > 0 and second["workers_cpu_seconds"] > 0
    assert second["cpu_seconds"] > first["cpu_seconds"] and second["monotonic"] > first["monotonic"]


def test_the_probe_turns_cpu_seconds_into_percent_of_one_core(sink: SinkServer) -> None:
    probe = SinkProbe(sink.client)
    started = time.monotonic()
    assert probe.sample() is None  # the first sample is the baseline
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn CPU in this process, which is the in-process sink's
        pass
    sample = probe.sample()
    wall = time.monotonic() - started  # at least the probe's interval
    assert sample is not None
    cpu, rss = sample
    # >= 0.3 CPU-seconds were used inside an interval of at most `wall` seconds, however busy the machine is
    assert 0.95 * 100.0 * 0.3 / wall <= cpu <= 100.0 * (os.cpu_count() or 1) + 5, (cpu, wall)
    assert rss > 10 * 2**20


@pytest.mark.parametrize(("avg", "peak", "limited"), [
    (SINK_BUSY_PERCENT + 1, 95.0, True),
    (40.0, 99.5, True),  # saturated at some moment
    (SINK_BUSY_PERCENT - 1, 90.0, False),
    (None, None, False),  # not measured: no claim either way
])
def test_the_report_says_plainly_when_the_sink_limited_a_rate(avg: float | None, peak: float | None,
                                                              limited: bool) -> None:
    note = sink_limit_note(report.CollectorResources(source="test", samples=3, cpu_avg_percent=avg,
                                                     cpu_max_percent=peak, rss_avg_mib=80, rss_max_mib=90))
    assert ("the SINK limited this rate, not the pipeline" in note) is limited
    assert (note == "") is not limited


def test_rate_results_carry_the_sinks_resources_through_json() -> None:
    result = report.RateResult(rate=1.0, duration_s=10, users=5, requests_sent=100, requests_failed=0,
                               requests_with_id=100, traced=100, spans=800, span_bytes=80_000,
                               sink=report.resources_of([(50.0, 100 * 2**20), (70.0, 120 * 2**20)], "sink probe"))
    again = report.RateResult.from_dict(result.to_dict())
    assert again.sink == result.sink and again.sink.cpu_max_percent == 70.0 and again.sink.rss_max_mib == 120.0
    markdown = report.render_markdown(report.SweepReport(stack="local", options={}, results=[again]).to_dict())
    header = next(line for line in markdown.splitlines() if line.startswith("| rate "))
    row = next(line for line in markdown.splitlines() if line.startswith("| 1 "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert cells[columns.index("sink CPU avg / max %")] == "60 / 70"
    assert cells[columns.index("sink RSS max MiB")] == "120"
