"""The compact span store: what a query returns is what was sent, across request boundaries, eviction, dropped
spans, odd ids, decode workers; and a stored Kong-like span costs at most 0.5 KB.

Expected values are built from the test's own inputs (ids, names, attributes), never from the sink's normalizer.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otelgate.otlp import decode_response
from otelgate.sink.server import SinkServer
from otelgate.sink.spanstore import prepare_spans
from otelgate.sink.store import Store
from otelgate.sink.testing import fake_token, kong_like_batch, new_trace_id, span, traces_request
from otelgate.sink.workers import INLINE_BELOW

TOKEN = fake_token()
HOUR_NS = 3600 * 10**9


@pytest.fixture()
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def _post(http: httpx.Client, sink: SinkServer, body: bytes) -> httpx.Response:
    return http.post(sink.signal_url("traces"), content=body,
                     headers={"Content-Type": "application/x-protobuf", "Authorization": f"Api-Token {TOKEN}"})


def test_a_trace_split_over_requests_comes_back_whole_in_start_order(http: httpx.Client) -> None:
    trace_id = new_trace_id()
    now = time.time_ns()
    with SinkServer(profile="dynatrace", token=TOKEN) as sink:
        for part in range(3):
            spans = [span(f"p{part}-{i}", trace_id=trace_id, end_ns=now - (30 - part * 10 - i) * 10**6)
                     for i in range(3)]
            spans.append(span("other"))
            assert _post(http, sink, traces_request(spans, service=f"svc{part}").SerializeToString()).status_code == 200
        got = sink.client.trace(trace_id.hex())
        assert [s["name"] for s in got] == [f"p{p}-{i}" for p in range(3) for i in range(3)]
        assert [s["service_name"] for s in got] == [f"svc{p}" for p in range(3) for _ in range(3)]
        assert {s["trace_id"] for s in got} == {trace_id.hex()}
        assert len(sink.client.spans()) == 12


def test_the_cap_evicts_the_oldest_spans_across_requests_and_the_index_follows(http: httpx.Client) -> None:
    traces = [new_trace_id() for _ in range(6)]  # request r carries traces[2r], traces[2r+1], 20 spans each
    with SinkServer(profile="dynatrace", token=TOKEN, max_items=100) as sink:
        for r in range(3):
            spans = [span(f"r{r}-{i}", trace_id=traces[2 * r + i // 20]) for i in range(40)]
            assert _post(http, sink, traces_request(spans).SerializeToString()).status_code == 200
        assert sink.client.health()["store"]["spans"] == 100
        assert sink.client.stats()["traces"]["dropped_for_cap"] == 20
        assert sink.client.trace(traces[0].hex()) == []  # the oldest 20 spans: all of the first trace
        assert [len(sink.client.trace(t.hex())) for t in traces[1:]] == [20] * 5
        names = [s["name"] for s in sink.client.spans()]
        assert names == [f"r0-{i}" for i in range(20, 40)] + [f"r{r}-{i}" for r in (1, 2) for i in range(40)]
        assert [t["trace_id"] for t in sink.client.traces()] == [t.hex() for t in traces[1:]]
        # a partly evicted request: evict 10 more, half of the second trace goes
        _post(http, sink, traces_request([span("late") for _ in range(10)]).SerializeToString())
        assert [s["name"] for s in sink.client.trace(traces[1].hex())] == [f"r0-{i}" for i in range(30, 40)]


def test_dropped_spans_leave_the_rest_of_the_request_stored(http: httpx.Client) -> None:
    trace_id = new_trace_id()
    now = time.time_ns()
    spans = [span("kept-1", trace_id=trace_id, end_ns=now),
             span("too-old", trace_id=trace_id, end_ns=now - 2 * HOUR_NS),
             span("kept-2", trace_id=trace_id, end_ns=now), span("too-new", end_ns=now + HOUR_NS)]
    with SinkServer(profile="dynatrace", token=TOKEN, report_dropped_spans=True) as sink:
        response = _post(http, sink, traces_request(spans, **{"deployment.environment": "x"}).SerializeToString())
        assert response.status_code == 200
        rejected, message = decode_response("traces", response.content)
        assert rejected == 2 and "span 'too-old'" in message
        got = sink.client.trace(trace_id.hex())
        assert [s["name"] for s in got] == ["kept-1", "kept-2"]
        assert got[0]["resource"] == {"deployment.environment": "x", "service.name": "test-service"}
        assert [r["reason"] for r in sink.client.rejections("traces")] == ["SPAN_END_TIME_OUT_OF_RANGE"]
        assert sink.client.stats()["traces"]["items"] == 2


def test_odd_and_missing_trace_ids_are_indexed_by_their_hex(http: httpx.Client) -> None:
    spans = [span("short", trace_id=b"\x01\x02\x03"), span("zero", trace_id=bytes(16)),
             span("long", trace_id=b"\xab" * 20)]
    spans[1].trace_id = b""  # no id at all
    with SinkServer(profile="otlp") as sink:
        body = traces_request(spans).SerializeToString()
        assert http.post(sink.signal_url("traces"), content=body,
                         headers={"Content-Type": "application/x-protobuf"}).status_code == 200
        assert [s["name"] for s in sink.client.trace("010203")] == ["short"]
        assert [s["name"] for s in sink.client.trace("ab" * 20)] == ["long"]
        assert [s["trace_id"] for s in sink.client.spans(name="zero")] == [""]


@pytest.mark.parametrize(("attrs", "expected"), [
    ({"http.status_code": "200"}, 1),  # an int attribute, compared as text
    ({"kong.request.id": "req-2"}, 1),  # a string
    ({"sampled": "true"}, 1),  # a bool
    ({"ratio": "0.5"}, 1),  # a double
    ({"kong.request.id": "absent"}, 0),
    ({"service.name": "kong"}, 3),  # falls back to the resource
])
def test_attribute_filters_find_every_value_type(http: httpx.Client, attrs: dict[str, str], expected: int) -> None:
    spans = [span("kong", attributes={"kong.request.id": f"req-{i}", "http.status_code": 200 + i,
                                      "sampled": i == 0, "ratio": 0.5 * (i + 1)}) for i in range(3)]
    with SinkServer(profile="dynatrace", token=TOKEN) as sink:
        assert _post(http, sink, traces_request(spans, service="kong").SerializeToString()).status_code == 200
        assert len(sink.client.spans(attrs=attrs)) == expected
        assert len(sink.client.spans(name="kong", attrs=attrs)) == expected
        assert sink.client.spans(name="nope", attrs=attrs) == []


def test_dump_and_load_round_trip_compact_spans(http: httpx.Client) -> None:
    trace_id = new_trace_id()
    with SinkServer(profile="dynatrace", token=TOKEN) as first, SinkServer(profile="dynatrace", token=TOKEN) as second:
        first_span = span("a", trace_id=trace_id, attributes={"k": [1, "x"]})
        _post(http, first, traces_request([first_span]).SerializeToString())
        dump = first.client.dump()
        second.client.load(dump)
        assert second.client.trace(trace_id.hex()) == first.client.trace(trace_id.hex())
        assert second.client.trace(trace_id.hex())[0]["attributes"] == {"k": [1, "x"]}
        _post(http, second, traces_request([span("b", trace_id=trace_id)]).SerializeToString())
        assert [s["name"] for s in second.client.trace(trace_id.hex())] == ["a", "b"]


def test_decode_workers_give_the_same_answers_and_store(http: httpx.Client) -> None:
    """Large bodies go to worker processes; answers, rejections and stored spans equal the inline sink's."""
    now = time.time_ns()
    bodies = [kong_like_batch(2048, end_ns=now), kong_like_batch(2048, end_ns=now - 2 * HOUR_NS),
              b"\x0a\xff\xff\xff" + bytes(INLINE_BELOW)]
    mixed = trace_service_pb2.ExportTraceServiceRequest()
    mixed.ParseFromString(kong_like_batch(2048, end_ns=now))
    mixed.resource_spans[0].scope_spans[0].spans[7].end_time_unix_nano = now - 2 * HOUR_NS
    bodies.append(mixed.SerializeToString())
    assert min(len(body) for body in bodies) >= INLINE_BELOW  # all large enough to be offloaded
    results = []
    for workers in (0, 2):
        with SinkServer(profile="dynatrace", token=TOKEN, workers=workers, report_dropped_spans=True) as sink:
            answers = [(r.status_code, r.content if r.status_code == 200 else b"")
                       for r in (_post(http, sink, body) for body in bodies)]
            spans = sink.client.spans()
            for s in spans:
                s.pop("received_at")
            rejections = [(r["reason"], r["http_status"], r["items"]) for r in sink.client.rejections()]
            results.append((answers, spans, rejections, sink.client.health()["offloaded_requests"]))
    inline, offloaded = results
    assert inline[3] == 0 and offloaded[3] == 3  # the malformed body was offloaded too (and answered 400)
    assert [a[0] for a in inline[0]] == [200, 200, 400, 200]
    assert inline[:3] == offloaded[:3]
    assert len(inline[1]) == 2048 + 2047


def test_a_stored_kong_like_span_costs_at_most_half_a_kilobyte() -> None:
    """Python-level allocations of the store for 40,000 Kong-like spans (the RSS figure is in the benchmark)."""
    store = Store(max_items=100_000)
    batch = kong_like_batch(512)
    now = time.time_ns()
    window = (now - HOUR_NS, now + HOUR_NS)
    prepared = [(bytes(bytearray(batch)), prepare_spans(batch, *window)) for _ in range(79)]  # 40,448 spans
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for raw, item in prepared:
            store.add_spans(raw, time.time(), item)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # the bodies and trace-id strings were allocated before tracing started; count them: the store keeps them
    kept_before = sum(len(raw) + len(item.trace_ids) for raw, item in prepared)
    per_span = (grown + kept_before) / store.sizes()["spans"]
    assert store.sizes()["spans"] == 79 * 512
    assert per_span <= 512, f"{per_span:.0f} bytes per stored span"
    assert per_span >= len(batch) / 512  # the wire bytes themselves: the figure is not vacuous
