"""The sink's otlp profile, query API, store cap, dump/load, faults, client waits and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from otelgate import SinkClient
from otelgate.otlp import decode_response
from otelgate.sink.client import SinkApiError
from otelgate.sink.server import SinkProcess, SinkServer
from otelgate.sink.testing import (
    CUMULATIVE,
    fake_token,
    gauge_metric,
    log_record,
    logs_request,
    metrics_request,
    new_trace_id,
    post_otlp,
    span,
    sum_metric,
    traces_request,
)
from otelgate.waiting import WaitTimeout


@pytest.fixture(scope="module")
def plain() -> Iterator[SinkServer]:
    with SinkServer(profile="otlp", max_items=50) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(plain: SinkServer) -> None:
    plain.client.reset()


# ------------------------------------------------------------------ the otlp profile


def test_otlp_profile_accepts_json_and_answers_in_json(plain: SinkServer) -> None:
    trace_id = "5B8EFFF798038103D269B633813FC60C"
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeSpans": [{"scope": {"name": "s"}, "spans": [{
            "traceId": trace_id, "spanId": "EEE19B7EC3C1B174", "parentSpanId": "", "name": "json-span",
            "kind": 2, "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
            "attributes": [{"key": "n", "value": {"intValue": "42"}}, {"key": "b", "value": {"boolValue": True}}],
            "unknownField": "ignored",
        }]}],
    }]}
    response = post_otlp(plain.signal_url("traces"), json.dumps(body).encode(), content_type="application/json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    stored = plain.client.trace(trace_id)[0]
    assert stored["trace_id"] == trace_id.lower() and stored["kind"] == "SERVER"
    assert stored["attributes"] == {"n": 42, "b": True}
    assert stored["start_unix_nano"] == 1544712660000000000  # outside Dynatrace's window, fine on plain OTLP


def test_otlp_profile_json_errors_are_json_status(plain: SinkServer) -> None:
    response = post_otlp(plain.signal_url("logs"), b"{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == 3
    bad_id = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "xyz"}]}]}]}).encode()
    assert post_otlp(plain.signal_url("logs"), bad_id, content_type="application/json").status_code == 400


def test_otlp_profile_rejects_nothing(plain: SinkServer) -> None:
    request = metrics_request([sum_metric("cumulative.counter", monotonic=True, temporality=CUMULATIVE)])
    response = post_otlp(plain.signal_url("metrics"), request)
    assert decode_response("metrics", response.content) == (None, "")
    assert plain.client.metric_points("cumulative.counter")[0]["temporality"] == "CUMULATIVE"
    assert post_otlp(plain.signal_url("traces"), traces_request([span()]), content_type="text/plain"
                     ).status_code == 415


def test_otlp_profile_has_no_dynatrace_paths(plain: SinkServer) -> None:
    assert post_otlp(f"{plain.url}/api/v2/otlp/v1/traces", traces_request([span()])).status_code == 404


# ------------------------------------------------------------------ queries


def test_span_filters_and_trace_summaries(plain: SinkServer) -> None:
    trace_id = new_trace_id()
    root = span("GET /coupon", trace_id=trace_id, attributes={"http.status_code": 200, "ok": True})
    child = span("membership", trace_id=trace_id, parent=root.span_id)
    post_otlp(plain.signal_url("traces"), traces_request([root, child], service="coupon"))
    post_otlp(plain.signal_url("traces"), traces_request([span("other")], service="pricing"))
    client = plain.client
    assert [s["name"] for s in client.spans(trace_id=trace_id.hex().upper())] == ["GET /coupon", "membership"]
    assert [s["name"] for s in client.spans(service="pricing")] == ["other"]
    assert [s["name"] for s in client.spans(attrs={"http.status_code": 200})] == ["GET /coupon"]
    assert [s["name"] for s in client.spans(attrs={"ok": True})] == ["GET /coupon"]
    assert [s["name"] for s in client.spans(**{"attr.service.name": "coupon", "name": "membership"})] == [
        "membership"]
    summaries = {t["trace_id"]: t for t in client.traces()}
    assert summaries[trace_id.hex()]["span_count"] == 2
    assert summaries[trace_id.hex()]["root_name"] == "GET /coupon"
    assert summaries[trace_id.hex()]["services"] == ["coupon"]
    assert client.trace("0" * 32) == []


def test_metric_and_log_filters(plain: SinkServer) -> None:
    post_otlp(plain.signal_url("metrics"), metrics_request([gauge_metric("a", attributes={"route": "x"}),
                                                           gauge_metric("b")]))
    post_otlp(plain.signal_url("logs"), logs_request([log_record("one", attributes={"k": "1"}),
                                                     log_record("two", attributes={"k": "2"})]))
    assert [p["name"] for p in plain.client.metric_points("a")] == ["a"]
    assert len(plain.client.metric_points()) == 2
    assert [p["name"] for p in plain.client.metric_points(attrs={"route": "x"})] == ["a"]
    assert [r["body"] for r in plain.client.logs(attrs={"k": "2"})] == ["two"]


def test_store_cap_evicts_oldest_and_counts_it(plain: SinkServer) -> None:
    for batch in range(3):
        post_otlp(plain.signal_url("traces"), traces_request([span(f"b{batch}-{i}") for i in range(30)]))
    spans = plain.client.spans()
    assert len(spans) == 50
    assert spans[0]["name"] == "b1-10" and spans[-1]["name"] == "b2-29"
    stats = plain.client.stats()["traces"]
    assert stats["items"] == 90 and stats["dropped_for_cap"] == 40
    assert plain.client.health()["store"]["spans"] == 50


def test_dump_load_roundtrip_and_reset(plain: SinkServer, tmp_path: Path) -> None:
    trace_id = new_trace_id()
    post_otlp(plain.signal_url("traces"), traces_request([span("saved", trace_id=trace_id)]))
    post_otlp(plain.signal_url("logs"), logs_request([log_record("linked", trace_id=trace_id)]))
    post_otlp(plain.signal_url("traces"), b"junk")
    dump = plain.client.dump()
    assert dump["otelgate_dump"] == 1 and dump["profile"] == "otlp"
    saved = tmp_path / "dump.json"
    saved.write_text(json.dumps(dump))

    plain.client.reset()
    assert plain.client.spans() == [] and plain.client.rejections() == []
    assert plain.client.stats()["traces"]["requests"] == 0

    plain.client.load(json.loads(saved.read_text()))
    assert plain.client.trace(trace_id.hex())[0]["name"] == "saved"
    assert plain.client.logs(trace_id=trace_id.hex())[0]["body"] == "linked"
    assert [r["reason"] for r in plain.client.rejections()] == ["MALFORMED"]
    assert plain.client.stats() == dump["stats"]
    with pytest.raises(SinkApiError, match="not an otelgate dump"):
        plain.client.load({"spans": []})
    assert plain.client.trace(trace_id.hex()), "a bad dump must not change the store"


def test_fault_validation_and_listing(plain: SinkServer) -> None:
    with pytest.raises(SinkApiError, match="status must be"):
        plain.client.inject_fault(status=200)
    with pytest.raises(SinkApiError, match="needs a status"):
        plain.client.inject_fault(status=None)
    faults = plain.client.inject_fault(status=503, count=None, signals=["metrics"])
    assert faults[0]["remaining"] is None
    assert post_otlp(plain.signal_url("metrics"), metrics_request([gauge_metric("g")])).status_code == 503
    assert post_otlp(plain.signal_url("metrics"), metrics_request([gauge_metric("g")])).status_code == 503
    plain.client.clear_faults()
    assert post_otlp(plain.signal_url("metrics"), metrics_request([gauge_metric("g")])).status_code == 200


def test_wait_timeout_shows_the_last_state(plain: SinkServer) -> None:
    post_otlp(plain.signal_url("traces"), traces_request([span("only-one")]))
    with pytest.raises(WaitTimeout, match="at least 2 span") as caught:
        plain.client.wait_for_spans(min_count=2, timeout=0.5)
    assert "only-one" in str(caught.value)


def test_client_against_a_dead_sink_times_out_clearly() -> None:
    with SinkServer(profile="otlp") as server:
        url = server.url
    with SinkClient(url, timeout=0.5) as client, pytest.raises(WaitTimeout, match="last error"):
        client.wait_for_spans(timeout=0.5)


def test_unknown_api_path_is_json_404(plain: SinkServer) -> None:
    response = httpx.get(f"{plain.url}/api/nope", timeout=5)
    assert response.status_code == 404 and "not found" in response.json()["error"]


# ------------------------------------------------------------------ CLI and subprocess


def test_cli_refuses_the_dynatrace_profile_without_a_token() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "otelgate", "sink", "--port", "0", "--token-env", "NO_SUCH_VAR"],
                            capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2
    assert "needs an API token" in result.stderr and "NO_SUCH_VAR" in result.stderr


def test_sink_subprocess_serves_and_never_prints_the_token(tmp_path: Path) -> None:
    token = fake_token()
    log_path = tmp_path / "sink.log"
    with SinkProcess(log_path, profile="dynatrace", token=token) as sink:
        response = post_otlp(f"{sink.otlp_endpoint}/v1/traces", traces_request([span("sub")]), token)
        assert response.status_code == 200
        assert post_otlp(f"{sink.otlp_endpoint}/v1/traces", traces_request([span()]), "wrong").status_code == 401
        assert sink.client.spans()[0]["name"] == "sub"
        health = sink.client.health()
        assert health["config"]["token"] == "<set>"
        assert token not in json.dumps(health) and token not in json.dumps(sink.client.dump())
    text = log_path.read_text()
    assert "otelgate sink (dynatrace)" in text and token not in text
