"""The sampling-rate sweep: report maths and recommendation (synthetic numbers), the locust users against a tiny
local HTTP server (single process and master + workers), and a short real sweep on the stack."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# loadtests/ is a top-level folder of the repository, not part of the installed otelgate package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests import locustrun, measure, parse_weights
from loadtests import sweep as sw
from otelgate import promtext
from otelgate.reports import sampling as rep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def result(rate: float, *, sent: int = 1000, traced: int | None = None, spans_per_trace: int = 6,
           p99: float = 50.0, duration: float = 10.0) -> rep.RateResult:
    traced = round(rate * sent) if traced is None else traced
    return rep.RateResult(rate=rate, duration_s=duration, users=10, requests_sent=sent, requests_failed=0,
                          requests_with_id=sent, traced=traced, spans=traced * spans_per_trace,
                          span_bytes=traced * 2000, latency_ms=rep.Latency(count=sent, p50=10, p95=30, p99=p99))


# ------------------------------------------------------------------------------------------------ report maths

def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert rep.percentile(values, 50) == 50
    assert rep.percentile(values, 99) == 99
    assert rep.percentile(values, 100) == 100
    assert rep.percentile([7.0], 99) == 7.0
    assert rep.percentile([], 50) is None
    with pytest.raises(ValueError):
        rep.percentile(values, 101)
    latency = rep.latency_of([30.0, 10.0, 20.0, 40.0])
    assert (latency.count, latency.p50, latency.p99, latency.mean, latency.max) == (4, 20.0, 40.0, 25.0, 40.0)


def test_derived_figures_per_rate() -> None:
    r = result(0.5, sent=1000, traced=480)
    assert r.requests_per_second == 100.0
    assert r.spans_per_second == 480 * 6 / 10
    assert r.spans_per_traced_request == 6
    assert r.bytes_per_traced_request == 2000
    frac = r.fraction()
    assert frac["low"] < 0.48 < frac["high"]
    assert frac["rate_consistent"] is True           # 0.5 inside [0.449, 0.511]
    assert result(0.5, traced=400).fraction()["rate_consistent"] is False


def test_rates_zero_and_one_are_exact() -> None:
    assert result(1.0).fraction()["rate_consistent"] is True
    assert result(1.0, traced=999).fraction()["rate_consistent"] is False   # 999/1000's interval holds 1.0
    assert result(0.0).fraction()["rate_consistent"] is True
    assert result(0.0, traced=1).fraction()["rate_consistent"] is False
    assert result(0.0, sent=0, traced=0).fraction()["observed"] is None     # nothing sent: no estimate


def test_recommendation_names_the_binding_budget() -> None:
    results = [result(0.0, p99=50), result(0.1, p99=52), result(0.5, p99=58), result(1.0, p99=90)]
    # spans/s: 0, 60, 300, 600
    spans = rep.recommend(results, rep.Budgets(max_spans_per_second=400, max_p99_overhead_ms=100))
    assert (spans.rate, spans.binding) == (0.5, ["spans_per_second"])
    latency = rep.recommend(results, rep.Budgets(max_spans_per_second=1000, max_p99_overhead_ms=10))
    assert (latency.rate, latency.binding) == (0.5, ["p99_overhead"])
    both = rep.recommend(results, rep.Budgets(max_spans_per_second=100, max_p99_overhead_ms=5))
    assert (both.rate, both.binding) == (0.1, ["spans_per_second", "p99_overhead"])
    loose = rep.recommend(results, rep.Budgets(max_spans_per_second=10_000, max_p99_overhead_ms=1000))
    assert (loose.rate, loose.binding) == (1.0, [])
    tight = rep.recommend([result(0.1), result(0.5)], rep.Budgets(max_spans_per_second=1))
    assert (tight.rate, tight.binding) == (None, ["spans_per_second"])
    assert rep.recommend(results, rep.Budgets()).rate is None
    assert spans.baseline_rate == 0.0
    assert spans.estimated_max_rate_for_span_budget == pytest.approx(400 / 600)
    assert [row["p99_overhead_ms"] for row in spans.per_rate] == [0, 2, 8, 40]


def test_overhead_baseline_is_the_lowest_rate_when_zero_is_not_measured() -> None:
    baseline, overheads = rep.p99_overheads([result(0.5, p99=60), result(0.1, p99=55)])
    assert baseline == 0.1
    assert overheads == {0.5: 5.0, 0.1: 0.0}


def test_report_files(tmp_path: Path) -> None:
    results = [result(0.0, p99=50), result(0.5, traced=505, p99=55), result(1.0, p99=60)]
    results[1].notes.append("a note")
    results[1].collector = rep.resources_of([(10.0, 100 * rep.MIB), (30.0, 120 * rep.MIB)], "psutil, pid 1")
    sweep = rep.SweepReport(stack="local", options={"users": 10, "duration_s": 10}, results=results,
                            budgets=rep.Budgets(max_spans_per_second=400, max_p99_overhead_ms=20))
    folder = rep.write_report(sweep, rep.report_folder(tmp_path, sweep.created_at))
    assert folder.name.startswith("sampling-")
    data = rep.load_report(folder)
    assert [r["rate"] for r in data["results"]] == [0.0, 0.5, 1.0]
    assert data["results"][1]["collector"]["cpu_avg_percent"] == 20.0
    assert data["results"][1]["collector"]["rss_max_mib"] == 120.0
    assert data["recommendation"]["rate"] == 0.5 and data["recommendation"]["binding"] == ["spans_per_second"]
    markdown = (folder / "report.md").read_text()
    assert "**Recommended sampling rate: 0.5.**" in markdown
    assert "0.5050 [" in markdown and "a note" in markdown
    for name in rep.PLOTS.values():
        assert (folder / name).read_bytes()[:8] == PNG_SIGNATURE, name
    assert rep.report_folder(tmp_path, sweep.created_at) != folder   # same second: a new folder, nothing lost
    assert rep.RateResult.from_dict(data["results"][1]).traced == 505


# ------------------------------------------------------------------------------------------------ sweep parsing

def test_option_parsing() -> None:
    assert sw.parse_duration("60s") == 60 and sw.parse_duration("1m30s") == 90 and sw.parse_duration("5") == 5
    assert sw.parse_rates("0,0.01,1") == (0.0, 0.01, 1.0)
    for bad in ("1.5", "a", "0.1,0.1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            sw.parse_rates(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        sw.parse_duration("soon")
    assert parse_weights("coupon=2, pricing=1") == {"coupon": 2.0, "pricing": 1.0}
    for bad in ("coupon", "shop=1", "coupon=x", "coupon=0", "coupon=-1"):
        with pytest.raises(ValueError):
            parse_weights(bad)
    args = sw.build_parser().parse_args([])
    assert (args.stack, args.rates, args.users, args.spawn_rate, args.duration) == ("local", sw.DEFAULT_RATES, 50,
                                                                                   10.0, 60.0)
    assert sw.build_parser().parse_args(["--warmup", "0"]).warmup == 0


def test_collector_self_metrics_parsing() -> None:
    text = """# HELP otelcol_exporter_send_failed_spans_total Number of spans in failed attempts.
# TYPE otelcol_exporter_send_failed_spans_total counter
otelcol_exporter_send_failed_spans_total{exporter="otlphttp/dt",service_instance_id="a b"} 3
otelcol_exporter_send_failed_spans_total{exporter="debug"} 2
otelcol_exporter_sent_spans_total{exporter="otlphttp/dt"} 100
otelcol_process_memory_rss_bytes 5.24288e+07
otelcol_process_cpu_seconds 1.5 1700000000000
"""
    metrics = promtext.totals(text)
    assert metrics["otelcol_exporter_send_failed_spans"] == 5
    assert metrics["otelcol_process_cpu_seconds"] == 1.5
    before = {"otelcol_exporter_send_failed_spans": 1.0, "otelcol_exporter_sent_spans": 150.0}
    failed = measure.counter_increase(before, metrics, measure.COLLECTOR_FAILURE)
    assert failed == {"otelcol_exporter_send_failed_spans": 4}
    # a counter lower than before was reset: its whole value counts
    assert measure.counter_increase(before, metrics, measure.COLLECTOR_SENT) == {"otelcol_exporter_sent_spans": 100}
    with pytest.raises(ValueError):
        promtext.totals("otelcol_broken{a=\"b\"}")


# ------------------------------------------------------------------------------ locust against a local server

class FakeGateway(BaseHTTPRequestHandler):
    """Answers like the gateway: every answer carries a fresh X-Kong-Request-Id; /inventory fails with 503."""

    issued: list[str]
    lock = threading.Lock()

    def do_GET(self) -> None:
        request_id = uuid.uuid4().hex
        with self.lock:
            self.issued.append(request_id)
        status = 503 if self.path.startswith("/inventory") else 200
        body = b'{"ok": true}'
        self.send_response(status)
        self.send_header("X-Kong-Request-Id", request_id)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_gateway() -> Iterator[tuple[str, list[str]]]:
    issued: list[str] = []
    handler = type("Handler", (FakeGateway,), {"issued": issued})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", issued
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("workers", [0, 2])
def test_locust_users_record_every_answer(fake_gateway: tuple[str, list[str]], tmp_path: Path,
                                          workers: int) -> None:
    host, issued = fake_gateway
    spec = locustrun.LoadSpec(host=host, users=4, spawn_rate=4, duration_s=3, workers=workers,
                       route_weights="coupon=2,inventory=1,pricing=1", think_min=0.02, think_max=0.05,
                       request_timeout=2)
    seen: list[locustrun.LoadSample] = []
    run = locustrun.run_locust(spec, tmp_path, lambda _elapsed, sample: seen.append(sample))
    assert run.requests >= 20, f"too little load to judge: {run.requests}"
    assert len(run.client.request_ids) == run.requests       # every request is in the per-process logs
    assert sorted(run.client.request_ids) == sorted(issued)   # ...with the id the server gave it
    inventory = sum(1 for path in (tmp_path / "requests").glob("*.tsv")
                    for line in path.read_text().splitlines() if line.split("\t")[3] == "inventory")
    assert 0 < run.failures == inventory                       # the 503s count as failures, nothing else does
    assert run.client.statuses.count(503) == inventory
    assert len(run.client.ok_latencies) == run.requests - run.failures
    assert 2 <= run.load_seconds(0) <= 4
    assert any(s.requests > 0 for s in seen), "no live progress was read from locust's history CSV"
    if workers:
        assert len(list((tmp_path / "requests").glob("*.tsv"))) == workers  # one file per worker process


def test_locust_failure_is_reported_with_its_log(tmp_path: Path) -> None:
    spec = locustrun.LoadSpec(host="http://127.0.0.1:9", users=1, spawn_rate=1, duration_s=1, route_weights="nope=1")
    with pytest.raises(locustrun.SweepError) as failure:
        locustrun.run_locust(spec, tmp_path, lambda _e, _s: None)
    assert "nope" in str(failure.value)


# ----------------------------------------------------------------------------------------- a real short sweep

@pytest.mark.stack
@pytest.mark.sampling
def test_short_sweep_on_the_stack(stack: object, tmp_path: Path) -> None:
    config = sw.SweepConfig(rates=(0.0, 1.0), users=4, spawn_rate=4, duration_s=4, think_min=0.05, think_max=0.15,
                            warmup_s=1, budgets=rep.Budgets(max_spans_per_second=1e6, max_p99_overhead_ms=1e4))
    folder = rep.report_folder(tmp_path, 0)
    results = sw.run_sweep(stack, config, folder)  # type: ignore[arg-type]
    sweep = rep.SweepReport(stack=stack.name, options=config.options(), results=results,  # type: ignore[attr-defined]
                            budgets=config.budgets)
    data = rep.load_report(rep.write_report(sweep, folder))
    by_rate = {r["rate"]: r for r in data["results"]}
    assert set(by_rate) == {0.0, 1.0}
    for r in data["results"]:
        assert r["requests_sent"] >= 20, r
        assert r["requests_failed"] == 0, r
        assert r["traced"] <= r["requests_with_id"] <= r["requests_sent"]
        assert r["latency_ms"]["p99"] is not None and r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        assert r["flush_complete"], r["notes"]
        assert r["traced_fraction"]["rate_consistent"] is True, r
        assert r["sink_rejected_total"] == 0, r["sink_rejected_items"]
        assert r["collector"]["samples"] > 0, r["collector"]
    one, zero = by_rate[1.0], by_rate[0.0]
    assert one["traced"] == one["requests_with_id"] == one["requests_sent"]
    assert zero["traced"] == 0
    assert one["spans"] >= one["traced"] * 2                 # a Kong root and at least one more span per request
    assert one["spans_per_second"] > zero["spans_per_second"]
    assert one["collector"]["cpu_max_percent"] > 0, one["collector"]  # the collector worked, and we saw it
    assert data["recommendation"]["rate"] == 1.0
    for name in rep.PLOTS.values():
        assert (folder / name).read_bytes()[:8] == PNG_SIGNATURE, name
    assert json.loads((folder / "report.json").read_text())["stack"] == stack.name  # type: ignore[attr-defined]


def test_join_of_client_ids_with_kong_roots() -> None:
    client = locustrun.ClientLog(request_ids=["a", "b", "c", ""], statuses=[200, 200, 500, 0],
                          latencies_ms=[1.0, 2.0, 3.0, 10_000.0], ok=[True, True, False, False])
    run = locustrun.LocustRun(folder=Path("."), stats=[{"num_requests": 4, "num_failures": 2}], client=client)
    answered = [rid for rid in client.request_ids if rid]
    # a and c traced, "x" is a root the client never saw
    assert sw.join_client_and_sink(run, answered, ["a", "c", "x"]) == (3, 2, 1, "")
    remote = locustrun.LocustRun(folder=Path("."), stats=[{"num_requests": 10, "num_failures": 0}], client=client)
    denominator, traced, foreign, note = sw.join_client_and_sink(remote, answered, ["a", "c", "x"])
    assert (denominator, traced, foreign) == (10, 3, 0) and "remote workers" in note


def test_self_metrics_probe_reads_rss_with_or_without_the_unit_suffix(monkeypatch: pytest.MonkeyPatch) -> None:
    scrapes = iter([{"otelcol_process_cpu_seconds": 1.0, "otelcol_process_memory_rss_bytes": 5e7},
                    {"otelcol_process_cpu_seconds": 1.5, "otelcol_process_memory_rss_bytes": 6e7},
                    {"otelcol_process_cpu_seconds": 2.0, "otelcol_process_memory_rss": 7e7},
                    {"otelcol_process_cpu_seconds": 2.5}])
    monkeypatch.setattr(measure, "scrape_metrics", lambda url: next(scrapes))
    probe = measure.SelfMetricsProbe("http://collector.invalid/metrics")
    assert probe.sample() is None, "the first scrape is the CPU baseline"
    second, third = probe.sample(), probe.sample()
    assert second is not None and second[1] == 6e7 and second[0] > 0
    assert third is not None and third[1] == 7e7
    assert probe.sample() is None, "no RSS in the scrape: no sample, not a zero"
