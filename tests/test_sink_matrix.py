"""One test per row of the behaviour matrix (docs/reference/dynatrace-otlp.md#behaviour-matrix), over real HTTP.

After every test the sink must still accept a valid request (autouse fixture ``_still_serving``).
"""

from __future__ import annotations

import gzip
import json
import math
import time
import tracemalloc
import zlib
from collections.abc import Iterator

import httpx
import pytest

from otelgate.otlp import decode_response, decode_status
from otelgate.sink.rules import METRICS_HEADER
from otelgate.sink.server import SinkServer
from otelgate.sink.testing import (
    CUMULATIVE,
    DELTA,
    fake_token,
    gauge_metric,
    histogram_metric,
    log_record,
    logs_request,
    metrics_request,
    new_trace_id,
    post_otlp,
    span,
    sum_metric,
    summary_metric,
    traces_request,
)

TOKEN = fake_token()
MINUTE_NS = 60 * 10**9


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkServer]:
    with SinkServer(profile="dynatrace", token=TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def _still_serving(sink: SinkServer) -> Iterator[None]:
    sink.client.reset()
    yield
    trace_id = new_trace_id()
    response = post_otlp(sink.signal_url("traces"), traces_request([span("after", trace_id=trace_id)]), TOKEN)
    assert response.status_code == 200, f"the sink stopped serving valid requests: {response.status_code}"
    assert sink.client.trace(trace_id.hex())[0]["name"] == "after"


def _status(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"] == "application/x-protobuf"
    return decode_status(response.content)


def _partial(signal: str, response: httpx.Response) -> tuple[int | None, str]:
    assert response.status_code == 200, response.content
    assert response.headers["content-type"] == "application/x-protobuf"
    return decode_response(signal, response.content)


def _reasons(sink: SinkServer, signal: str | None = None) -> list[str]:
    return [r["reason"] for r in sink.client.rejections(signal)]


# ------------------------------------------------------------------ rows 1, 2, 21: routes and plain success


def test_row1_21_ingest_paths_accept_and_answer_an_empty_protobuf_response(sink: SinkServer) -> None:
    for url in (sink.signal_url("traces"), f"{sink.url}/e/abc12345/api/v2/otlp/v1/traces"):
        response = post_otlp(url, traces_request([span("ok")]), TOKEN)
        assert _partial("traces", response) == (None, "")
        assert response.content == b""
    assert sink.client.stats()["traces"]["items"] == 2


def test_row2_unknown_path_is_404_and_recorded(sink: SinkServer) -> None:
    response = post_otlp(f"{sink.url}/v1/traces", traces_request([span()]), TOKEN)
    assert response.status_code == 404
    code, message = _status(response)
    assert code == 5 and "/api/v2/otlp/v1/{traces,metrics,logs}" in message
    assert _reasons(sink) == ["NOT_FOUND"]
    assert post_otlp(f"{sink.otlp_endpoint}/v1/profiles", b"", TOKEN).status_code == 404


def test_row2_wrong_method_is_405(sink: SinkServer) -> None:
    response = httpx.get(sink.signal_url("traces"), timeout=5)
    assert response.status_code == 405
    assert _status(response)[0] == 12


# ------------------------------------------------------------------ rows 3, 4: authentication and scopes


@pytest.mark.parametrize(("authorization", "message"), [
    (None, "Missing authorization parameter."),
    ("Api-Token dt0c01.WRONGWRONGWRONGWRONGWRON.x", "Token Authentication failed"),
    (f"Bearer {TOKEN}", "Authorization header contains unsupported authorization scheme 'Bearer'"),
    (f"Basic {TOKEN}", "Authorization header contains unsupported authorization scheme 'Basic'"),
    ("Api-Token", "Token Authentication failed"),
])
def test_row3_bad_credentials_are_401_unauthenticated(sink: SinkServer, authorization: str | None,
                                                      message: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = post_otlp(sink.signal_url("metrics"), metrics_request([gauge_metric("g")]), headers=headers)
    assert response.status_code == 401
    assert _status(response) == (16, message)
    assert TOKEN not in response.text
    assert sink.client.metric_points() == []
    rejection = sink.client.rejections("metrics")[0]
    assert rejection["reason"] == "UNAUTHENTICATED" and rejection["http_status"] == 401
    assert TOKEN not in json.dumps(sink.client.dump())


def test_row3_bearer_is_accepted_in_platform_token_mode() -> None:
    token = fake_token()
    with SinkServer(profile="dynatrace", token=token, allow_bearer=True) as platform:
        response = post_otlp(platform.signal_url("traces"), traces_request([span()]),
                             headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert len(platform.client.spans()) == 1


def test_row4_token_without_the_signal_scope_is_403() -> None:
    token = fake_token()
    with SinkServer(profile="dynatrace", token=token, token_scopes=frozenset({"metrics.ingest"})) as scoped:
        response = post_otlp(scoped.signal_url("logs"), logs_request([log_record()]), token)
        assert response.status_code == 403
        assert _status(response) == (7, "Token is missing required scope. Use one of: logs.ingest")
        assert post_otlp(scoped.signal_url("metrics"), metrics_request([gauge_metric("g")]), token).status_code == 200


# ------------------------------------------------------------------ rows 5-7: content type and encoding


def test_row5_json_body_is_415_on_the_dynatrace_profile(sink: SinkServer) -> None:
    body = json.dumps({"resourceSpans": []}).encode()
    response = post_otlp(sink.signal_url("traces"), body, TOKEN, content_type="application/json")
    assert response.status_code == 415
    _code, message = _status(response)
    assert "application/json" in message and "application/x-protobuf" in message
    assert _reasons(sink, "traces") == ["UNSUPPORTED_MEDIA_TYPE"]


def test_row6_grpc_content_type_is_415(sink: SinkServer) -> None:
    response = post_otlp(sink.signal_url("traces"), traces_request([span()]), TOKEN,
                         content_type="application/grpc")
    assert response.status_code == 415


def test_row7_gzip_is_accepted_other_encodings_refused(sink: SinkServer) -> None:
    assert post_otlp(sink.signal_url("traces"), traces_request([span("zipped")]), TOKEN,
                     compress=True).status_code == 200
    assert sink.client.spans(name="zipped")
    response = post_otlp(sink.signal_url("traces"), traces_request([span()]), TOKEN,
                         headers={"Content-Encoding": "br"})
    assert response.status_code == 415
    assert _reasons(sink, "traces") == ["UNSUPPORTED_CONTENT_ENCODING"]


def test_row7_concatenated_gzip_members_are_one_body(sink: SinkServer) -> None:
    raw = traces_request([span("members")]).SerializeToString()
    body = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    response = post_otlp(sink.signal_url("traces"), body, TOKEN, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert sink.client.spans(name="members")


# ------------------------------------------------------------------ row 8: size limits


def test_row8_oversize_body_is_413(sink: SinkServer) -> None:
    body = b"\x0a" * (2 * 1024 * 1024 + 1)  # logs limit 2 MB
    response = post_otlp(sink.signal_url("logs"), body, TOKEN)
    assert response.status_code == 413
    assert _status(response)[0] == 8
    assert _reasons(sink, "logs") == ["PAYLOAD_TOO_LARGE"]


def test_row8_oversize_after_decompression_is_413(sink: SinkServer) -> None:
    records = [log_record("x" * 1000) for _ in range(2200)]  # ~2.2 MB raw, compresses to a few kB
    response = post_otlp(sink.signal_url("logs"), logs_request(records), TOKEN, compress=True)
    assert response.status_code == 413
    assert sink.client.logs() == []


def _gzip_bomb(decompressed_mb: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    parts = [compressor.compress(zeros) for _ in range(decompressed_mb)]
    return b"".join(parts) + compressor.flush()


def test_row8_gzip_bomb_is_413_quickly_without_allocating_it(sink: SinkServer) -> None:
    bomb = _gzip_bomb(256)  # 256 MB of zeros in ~250 kB
    assert len(bomb) < 1024 * 1024
    tracemalloc.start()
    try:
        started = time.monotonic()
        response = post_otlp(sink.signal_url("traces"), bomb, TOKEN, headers={"Content-Encoding": "gzip"})
        elapsed = time.monotonic() - started
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert "decompressed body exceeds 8388608 bytes" in _status(response)[1]
    assert elapsed < 5, f"the bomb took {elapsed:.1f}s"
    assert peak < 40 * 1024 * 1024, f"peak allocation {peak / 1e6:.0f} MB while refusing the bomb"


def test_row8_limits_are_configurable() -> None:
    with SinkServer(profile="otlp", size_limits={"traces": 1000, "metrics": 1000, "logs": 1000}) as small:
        big = traces_request([span(attributes={"k": "v" * 2000})])
        assert post_otlp(small.signal_url("traces"), big).status_code == 413
        assert post_otlp(small.signal_url("traces"), traces_request([span()])).status_code == 200


# ------------------------------------------------------------------ rows 9, 10: decode failures, empty request


def test_row9_malformed_protobuf_is_400(sink: SinkServer) -> None:
    response = post_otlp(sink.signal_url("traces"), b"\x0a\xff\xff\xff\xff\x0f garbage", TOKEN)
    assert response.status_code == 400
    code, message = _status(response)
    assert code == 3 and "cannot decode" in message
    assert _reasons(sink, "traces") == ["MALFORMED"]


def test_row9_truncated_gzip_is_400(sink: SinkServer) -> None:
    body = gzip.compress(traces_request([span()] * 20).SerializeToString())
    response = post_otlp(sink.signal_url("traces"), body[: len(body) // 2], TOKEN,
                         headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "truncated" in _status(response)[1]


def test_row9_gzip_header_on_plain_body_is_400(sink: SinkServer) -> None:
    response = post_otlp(sink.signal_url("traces"), traces_request([span()]), TOKEN,
                         headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400


@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_row10_empty_request_is_200_with_partial_success_unset(sink: SinkServer, signal: str) -> None:
    for body in (b"", gzip.compress(b"")):
        headers = {"Content-Encoding": "gzip"} if body else {}
        response = post_otlp(sink.signal_url(signal), body, TOKEN, headers=headers)
        assert _partial(signal, response) == (None, "")
    assert sink.client.stats()[signal]["accepted_requests"] == 2


# ------------------------------------------------------------------ rows 11-14: metrics


def _metric_lines(message: str) -> list[str]:
    assert message.startswith(METRICS_HEADER), message
    body = message[len(METRICS_HEADER):]
    assert body.endswith("\n")
    return body.splitlines()


def test_row11_unsupported_metrics_are_partial_success_with_dynatrace_lines(sink: SinkServer) -> None:
    request = metrics_request([
        sum_metric("kong.requests.total", values=(1, 2), monotonic=True, temporality=CUMULATIVE),
        histogram_metric("kong.latency", temporality=CUMULATIVE),
        summary_metric("legacy.summary"),
        gauge_metric("bad.value", values=(math.nan,)),
        gauge_metric("inf.value", values=(math.inf,)),
        histogram_metric("unsorted", bounds=(5.0, 1.0)),
        gauge_metric("wide", attributes={f"dim{i}": i for i in range(51)}),
        gauge_metric("fine", values=(1.5,)),
    ])
    rejected, message = _partial("metrics", post_otlp(sink.signal_url("metrics"), request, TOKEN))
    assert rejected == 8
    assert _metric_lines(message) == [
        "Unsupported metric: 'kong.requests.total' - Reason: UNSUPPORTED_METRIC_TYPE_MONOTONIC_CUMULATIVE_SUM",
        "Unsupported metric: 'kong.latency' - Reason: UNSUPPORTED_METRIC_TYPE_CUMULATIVE_HISTOGRAM",
        "Unsupported metric: 'legacy.summary' - Reason: UNSUPPORTED_METRIC_TYPE_SUMMARY",
        "Metric value dropped. key: 'bad.value' details: 'Value was NaN' - Reason: VALUE_INVALID",
        "Metric value dropped. key: 'inf.value' details: 'Value was Infinity' - Reason: VALUE_INVALID",
        "Histogram metric dropped. key: 'unsorted' details: 'Histogram boundaries are not sorted'"
        " - Reason: HISTOGRAM_BUCKET_INVALID",
        "Metric dropped: 'wide' - Reason: DIMENSION_COUNT_EXCEEDED",
    ]
    assert [p["name"] for p in sink.client.metric_points()] == ["fine"]
    rejections = {r["name"]: r for r in sink.client.rejections("metrics")}
    assert rejections["kong.requests.total"]["items"] == 2
    stats = sink.client.stats()["metrics"]
    assert stats["rejected_items"] == 8 and stats["items"] == 1


def test_row11_fifty_dimensions_are_fine(sink: SinkServer) -> None:
    request = metrics_request([gauge_metric("wide", attributes={f"dim{i}": i for i in range(50)})])
    assert _partial("metrics", post_otlp(sink.signal_url("metrics"), request, TOKEN)) == (None, "")


def test_row12_more_than_15000_points_drop_the_request_with_413(sink: SinkServer) -> None:
    request = metrics_request([gauge_metric("many", values=[1.0] * 15_001)])
    response = post_otlp(sink.signal_url("metrics"), request, TOKEN, compress=True)
    assert response.status_code == 413
    assert sink.client.metric_points() == []
    rejection = sink.client.rejections("metrics")[0]
    assert rejection["reason"] == "DATA_POINT_COUNT_EXCEEDED" and rejection["items"] == 15_001


def test_row12_too_many_points_as_partial_success_when_configured() -> None:
    token = fake_token()
    with SinkServer(profile="dynatrace", token=token, too_many_points="partial_success",
                    max_data_points=10) as sink:
        request = metrics_request([gauge_metric("many", values=[1.0] * 11)])
        rejected, message = _partial("metrics", post_otlp(sink.signal_url("metrics"), request, token))
        assert rejected == 11 and "DATA_POINT_COUNT_EXCEEDED" in message
        assert sink.client.metric_points() == []


def test_row13_cumulative_non_monotonic_sum_is_accepted(sink: SinkServer) -> None:
    request = metrics_request([sum_metric("inflight", values=(3,), monotonic=False, temporality=CUMULATIVE),
                               sum_metric("delta.counter", values=(4,), monotonic=True, temporality=DELTA)])
    assert _partial("metrics", post_otlp(sink.signal_url("metrics"), request, TOKEN)) == (None, "")
    inflight = sink.client.metric_points("inflight")[0]
    assert inflight["temporality"] == "CUMULATIVE" and inflight["monotonic"] is False and inflight["value"] == 3
    assert sink.client.metric_points("delta.counter")[0]["value"] == 4


def test_row14_keys_and_dimensions_are_normalised(sink: SinkServer) -> None:
    request = metrics_request([gauge_metric("kong:latency ms", attributes={"My:Attribute": "x", "ok": True,
                                                                          "long": "v" * 300})])
    assert post_otlp(sink.signal_url("metrics"), request, TOKEN).status_code == 200
    point = sink.client.metric_points("kong_latency_ms")[0]
    assert point["attributes"] == {"my_attribute": "x", "ok": "true", "long": "v" * 255}
    assert point["resource"]["service.name"] == "test-service"


# ------------------------------------------------------------------ rows 15, 16: traces


def test_row15_spans_outside_the_time_window_are_not_stored(sink: SinkServer) -> None:
    now = time.time_ns()
    request = traces_request([span("old", end_ns=now - 61 * MINUTE_NS), span("future", end_ns=now + 11 * MINUTE_NS),
                              span("edge", end_ns=now - 59 * MINUTE_NS), span("soon", end_ns=now + 9 * MINUTE_NS)])
    assert _partial("traces", post_otlp(sink.signal_url("traces"), request, TOKEN)) == (None, "")
    assert sorted(s["name"] for s in sink.client.spans()) == ["edge", "soon"]
    rejection = sink.client.rejections("traces")[0]
    assert rejection["reason"] == "SPAN_END_TIME_OUT_OF_RANGE" and rejection["items"] == 2
    assert sink.client.stats()["traces"]["rejected_items"] == 2


def test_row15_dropped_spans_reported_when_configured() -> None:
    token = fake_token()
    with SinkServer(profile="dynatrace", token=token, report_dropped_spans=True) as sink:
        request = traces_request([span("old", end_ns=time.time_ns() - 2 * 60 * MINUTE_NS), span("ok")])
        rejected, message = _partial("traces", post_otlp(sink.signal_url("traces"), request, token))
        assert rejected == 1 and "end time out of range" in message


def test_row16_missing_service_name_is_stored_as_unexpected_service(sink: SinkServer) -> None:
    response = post_otlp(sink.signal_url("traces"), traces_request([span("anon")], service=None), TOKEN)
    assert response.status_code == 200
    assert sink.client.spans(name="anon")[0]["service_name"] is None


# ------------------------------------------------------------------ rows 17-19: logs


def test_row17_18_log_timestamps(sink: SinkServer) -> None:
    now = time.time_ns()
    request = logs_request([log_record("ancient", time_ns=now - 25 * 60 * MINUTE_NS),
                            log_record("future", time_ns=now + 60 * MINUTE_NS),
                            log_record("no-time", time_ns=0)])
    assert _partial("logs", post_otlp(sink.signal_url("logs"), request, TOKEN)) == (None, "")
    records = {r["body"]: r for r in sink.client.logs()}
    assert set(records) == {"future", "no-time"}
    assert now <= records["future"]["time_unix_nano"] <= time.time_ns()  # clamped to "now"
    assert records["no-time"]["time_unix_nano"] >= now
    assert _reasons(sink, "logs") == ["LOG_TIMESTAMP_OUT_OF_RANGE"]


def test_row19_log_linking(sink: SinkServer) -> None:
    trace_id = new_trace_id()
    hex_id = trace_id.hex()
    request = logs_request([
        log_record("field", trace_id=trace_id, span_id=b"\x01" * 8),
        log_record("attribute-upper", attributes={"trace_id": hex_id.upper()}),
        log_record("dt-attribute", attributes={"dt.trace_id": hex_id}),
        log_record("kong-w3c", attributes={"trace_id": {"w3c": hex_id}}),
        log_record("not-hex", attributes={"trace_id": "z" * 32}),
        log_record("zero-field", trace_id=bytes(16)),
        log_record("short-field", trace_id=b"\x01" * 8),
    ])
    assert post_otlp(sink.signal_url("logs"), request, TOKEN).status_code == 200
    records = {r["body"]: r for r in sink.client.logs()}
    linkable = {body for body, r in records.items() if r["linkable"]}
    assert linkable == {"field", "attribute-upper", "dt-attribute"}
    assert records["field"]["trace_id"] == hex_id and records["field"]["span_id"] == "01" * 8
    assert records["attribute-upper"]["trace_id"] == ""  # the OTLP field was empty
    assert records["kong-w3c"]["attributes"] == {"trace_id.w3c": hex_id}  # flattened, as Dynatrace does
    assert {r["body"] for r in sink.client.logs(trace_id=hex_id)} == linkable


# ------------------------------------------------------------------ row 20: throttling


def test_row20_fault_injection_answers_n_requests_then_recovers(sink: SinkServer) -> None:
    sink.client.inject_fault(status=429, count=2, retry_after=3, signals=["traces"])
    for _ in range(2):
        response = post_otlp(sink.signal_url("traces"), traces_request([span("throttled")]), TOKEN)
        assert response.status_code == 429 and response.headers["retry-after"] == "3"
        assert _status(response)[0] == 8
    assert post_otlp(sink.signal_url("logs"), logs_request([log_record()]), TOKEN).status_code == 200
    assert sink.client.spans(name="throttled") == []
    assert _reasons(sink, "traces") == ["FAULT_INJECTED", "FAULT_INJECTED"]


def test_row20_latency_fault(sink: SinkServer) -> None:
    sink.client.inject_fault(status=None, count=1, latency_ms=300)
    started = time.monotonic()
    assert post_otlp(sink.signal_url("traces"), traces_request([span("slow")]), TOKEN).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert sink.client.spans(name="slow")
