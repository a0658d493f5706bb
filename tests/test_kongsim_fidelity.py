"""Where the Kong simulator used to differ from Kong 3.9.1, pinned to Kong's own source and specs.

Every expected value below is read from Kong/kong at tag 3.9.1 (path:line cited next to it), never computed by the
simulator's code.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from kongsim_fakes import OtlpReceiver, running_stack
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from otelgate import kongconfig
from otelgate.kongsim.tracing import SpanExporter
from otelgate.waiting import poll_until

SAMPLED = "92a54b3e1a7c4f2da9e44b8a6f3e1dab"
PARENT = "00f067aa0ba902b7"


def names(spans: list[Any]) -> Counter[str]:
    return Counter(s.name for s in spans)


def trace_spans(st: Any, trace_id: str, count: int) -> list[Any]:
    return poll_until(lambda: [s for s in st.otlp.spans() if s.trace_id.hex() == trace_id],
                      lambda spans: len(spans) >= count, what=f"{count} spans of {trace_id}", timeout=5,
                      interval=0.05)


# ------------------------------------------------------------------------------------- instrumentations (item 2)

# spec/02-integration/14-observability/01-instrumentations_spec.lua@3.9.1: "router" :176-207 (kong 1, kong.router 1),
# "balancer" :244-276 (kong 1, kong.balancer 1), "dns_query" :380-411 (kong 1 + kong.dns; the spec's 2 include a
# lookup made by its own test plugin, one proxied request to a hostname makes one). The root exists for any
# non-off list because `request` is defined after available_types is built
# (kong/observability/tracing/instrumentation.lua:215-225) and only `off` removes it (:409-420).
@pytest.mark.parametrize(("instrumentations", "expected"), [
    ("router", {"kong": 1, "kong.router": 1}),
    ("balancer", {"kong": 1, "kong.balancer": 1}),
    ("dns_query", {"kong": 1, "kong.dns": 1}),
    ("router,balancer", {"kong": 1, "kong.router": 1, "kong.balancer": 1}),
    ("request", {"kong": 1}),
])
def test_lists_without_request_keep_the_root_span(instrumentations: str, expected: dict[str, int]) -> None:
    with running_stack(instrumentations=instrumentations) as st:
        httpx.get(f"{st.proxy}/coupon/x", headers={"traceparent": f"00-{SAMPLED}-{PARENT}-01"}, timeout=5)
        upstream_traceparent = st.upstream.requests[-1].headers["traceparent"]
        spans = trace_spans(st, SAMPLED, sum(expected.values()))
        time.sleep(0.2)  # anything extra would have been in the same batch
        spans = [s for s in st.otlp.spans() if s.trace_id.hex() == SAMPLED]
    assert names(spans) == Counter(expected)
    root = next(s for s in spans if s.name == "kong")
    assert root.parent_span_id.hex() == PARENT
    # rate 1: sampled, so -01 goes upstream; the parent is the pre-created balancer span when balancer is on
    # (instrumentation.lua:265-280), else the root
    parent = next((s for s in spans if s.name == "kong.balancer"), root)
    assert upstream_traceparent == f"00-{SAMPLED}-{parent.span_id.hex()}-01"


# ------------------------------------------------------------------------------------- IP-literal upstream (item 3)

def test_ip_literal_upstream_has_no_dns_span() -> None:
    # kong/runloop/balancer/init.lua:290-296: a host that is not a name is used as is (no toip, so no kong.dns
    # span from the wrapped resolver, instrumentation.lua:286-309); hostname = the host (net.peer.name)
    with running_stack(upstream_host="127.0.0.1") as st:
        httpx.get(f"{st.proxy}/coupon/x", headers={"traceparent": f"00-{SAMPLED}-{PARENT}-01"}, timeout=5)
        spans = trace_spans(st, SAMPLED, 5)
        time.sleep(0.2)
        spans = [s for s in st.otlp.spans() if s.trace_id.hex() == SAMPLED]
    assert names(spans) == Counter({"kong": 1, "kong.router": 1, "kong.access.plugin.opentelemetry": 1,
                                    "kong.balancer": 1, "kong.header_filter.plugin.opentelemetry": 1})
    balancer = next(s for s in spans if s.name == "kong.balancer")
    assert {kv.key: kv.value.string_value for kv in balancer.attributes}["net.peer.name"] == "127.0.0.1"


def test_retries_add_balancer_spans_but_no_dns_span() -> None:
    # retries re-run balancer.execute in the balancer phase (kong/init.lua@3.9.1 Kong.balancer, try_count > 1),
    # which is not a tracing phase, so the wrapped resolver's start_span is a no-op there (kong/pdk/tracing.lua
    # :436-444,509-515): one kong.dns (the access-phase resolution) and one kong.balancer per try
    # (instrumentation.lua:97-147); retries = 5 by default (kong/db/schema/entities/services.lua)
    with running_stack() as st:
        st.upstream.close()  # connection refused on every try
        response = httpx.get(f"{st.proxy}/coupon/x", headers={"traceparent": f"00-{SAMPLED}-{PARENT}-01"},
                             timeout=10)
        spans = trace_spans(st, SAMPLED, 1 + 1 + 6)
    assert response.status_code == 502
    counted = names(spans)
    assert (counted["kong.dns"], counted["kong.balancer"]) == (1, 6), counted


# ------------------------------------------------------------------------------------- root start precision

def test_root_span_starts_on_a_whole_millisecond() -> None:
    # instrumentation.lua:234-236: start = ctx.KONG_PROCESSING_START * 1e6, where KONG_PROCESSING_START =
    # ngx.req.start_time() * 1000 ("seconds with millisecond resolution", kong/tools/time.lua:95-96)
    with running_stack() as st:
        for index in range(3):
            httpx.get(f"{st.proxy}/coupon/{index}", timeout=5)
        roots = poll_until(lambda: [s for s in st.otlp.spans() if s.name == "kong"], lambda r: len(r) >= 3,
                           what="3 root spans", timeout=5, interval=0.05)
    assert [r.start_time_unix_nano % 1_000_000 for r in roots] == [0, 0, 0]


# ------------------------------------------------------------------------------------- the queue (item 4, retry)

def _exporter_conf(endpoint: str, **queue: Any) -> dict[str, Any]:
    base = {"max_batch_size": 200, "max_coalescing_delay": 0.05, "max_entries": 10_000, "max_retry_time": 60,
            "initial_retry_delay": 0.01, "max_retry_delay": 60}
    return {"traces_endpoint": endpoint, "queue": {**base, **queue}, "connect_timeout": 1000, "send_timeout": 5000,
            "read_timeout": 5000, "headers": None, "resource_attributes": None}


def test_full_queue_drops_the_oldest_entries() -> None:
    # kong/tools/queue.lua:540-544: when the queue is full, "queue full, dropping old entries until processing is
    # successful again" and drop_oldest_entry() (:376-380) before the new entry is added
    receiver = OtlpReceiver()

    async def scenario() -> SpanExporter:
        exporter = SpanExporter(_exporter_conf(receiver.endpoint, max_entries=3), "node")
        for index in range(1, 6):
            exporter.enqueue(PbSpan(name=f"s{index}", trace_id=b"\1" * 16, span_id=bytes([index]) * 8))
        exporter.start()
        await exporter.flush(5)
        await exporter.close()
        return exporter

    try:
        exporter = asyncio.run(scenario())
        sent = [s.name for s in receiver.spans()]
    finally:
        receiver.close()
    assert sent == ["s3", "s4", "s5"]
    assert exporter.dropped_spans == 2


def test_retries_until_more_than_max_retry_time_has_elapsed() -> None:
    # queue.lua:343-353: after a failed attempt, give up only when (now - start) > max_retry_time, else sleep
    # min(max_retry_delay, 2^n * initial_retry_delay). initial 0.2, max_retry_time 1.0: attempts at about
    # 0, 0.2, 0.6 (elapsed 0.6 <= 1.0, sleep 0.8), 1.4 (elapsed > 1.0: give up) = 4 attempts
    receiver = OtlpReceiver()
    receiver.statuses = [503] * 10

    async def scenario() -> SpanExporter:
        exporter = SpanExporter(_exporter_conf(receiver.endpoint, initial_retry_delay=0.2, max_retry_time=1.0),
                                "node")
        exporter.start()
        exporter.enqueue(PbSpan(name="s", trace_id=b"\1" * 16, span_id=b"\2" * 8))
        deadline = time.monotonic() + 6
        while exporter.dropped_spans == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await exporter.close()
        return exporter

    try:
        exporter = asyncio.run(scenario())
    finally:
        receiver.close()
    assert exporter.dropped_spans == 1
    assert 10 - len(receiver.statuses) == 4


# ------------------------------------------------------------------------------------- reload keeps the queue

def test_reload_keeps_queued_spans_and_the_tcp_log_connection() -> None:
    # queue.lua:205-216: get_or_create_queue returns the existing queue (keyed by plugin id, :98-100, stable across
    # reloads: kong/db/schema/others/declarative_config.lua:549-640) and only replaces handler_conf; entries
    # queued before the reload are sent. tcp-log keeps its kept-alive socket (a per-worker pool, handler.lua:55).
    with running_stack({"opentelemetry": {"queue.max_coalescing_delay": 1.5}}) as st:
        httpx.get(f"{st.proxy}/coupon/a", headers={"traceparent": f"00-{SAMPLED}-{PARENT}-01"}, timeout=5)
        poll_until(lambda: st.lines.lines, bool, what="the first tcp-log line", timeout=5, interval=0.05)
        changed = json.loads(json.dumps(st.doc))
        next(p for p in changed["plugins"] if p["name"] == "prometheus")["config"]["bandwidth_metrics"] = False
        assert httpx.post(f"{st.admin}/config", json=changed, timeout=5).status_code == 201
        httpx.get(f"{st.proxy}/coupon/b", timeout=5)
        spans = trace_spans(st, SAMPLED, 6)
        poll_until(lambda: st.lines.lines, lambda lines: len(lines) >= 2, what="two tcp-log lines", timeout=5,
                   interval=0.05)
        connections = st.lines.connections
    assert len(spans) == 6
    assert connections == 1


# ------------------------------------------------------------------------------------- DNS failures

def test_nxdomain_answers_503_and_logs_empty_tries() -> None:
    # balancer/init.lua:380-384: "dns server error: 3 name error" -> "name resolution failed", 503;
    # runloop/handler.lua:833 tries = setmetatable({}, ARRAY_MT) from balancer_prepare on, and the serializer logs
    # ctx.balancer_data.tries (kong/pdk/log.lua:918): an empty JSON array
    with running_stack(upstream_host="no-such-host.invalid") as st:
        response = httpx.get(f"{st.proxy}/coupon/x", timeout=10)
        raw = poll_until(lambda: st.lines.lines, bool, what="the tcp-log line", timeout=5, interval=0.05)[0]
    assert response.status_code == 503
    assert response.json()["message"] == "name resolution failed"
    assert '"tries":[]' in raw
    assert json.loads(raw)["source"] == "kong"


def test_other_resolver_errors_answer_500_with_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    # balancer/init.lua:389-390 returns the resolver's error with 500; runloop/handler.lua:860-862 wraps it as
    # "failed the initial dns/balancer resolve for '<host>' with: <err>", sent by kong.response.error (:1423-1425);
    # resty.dns reports rcode 2 as "dns server error: 2 server failure" (kong/resty/dns/client.lua:1252)
    real = socket.getaddrinfo

    def failing(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "servfail.test":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", failing)
    with running_stack(upstream_host="servfail.test") as st:
        response = httpx.get(f"{st.proxy}/coupon/x", timeout=10)
    assert response.status_code == 500
    assert response.json()["message"] == ("failed the initial dns/balancer resolve for 'servfail.test' with: "
                                          "dns server error: 2 server failure")


# ------------------------------------------------------------------------------------- logged entities

def test_logged_route_and_service_have_timestamps_and_no_priority() -> None:
    # routes.lua:150-151 and services.lua:30-31: created_at/updated_at (auto_timestamp_s: integer seconds);
    # `priority` is a routes field only under router_flavor=expressions (routes.lua:209-219), and 3.9.1's default
    # flavor is traditional_compatible (kong/templates/kong_defaults.lua:189)
    before = int(time.time())
    with running_stack() as st:
        httpx.get(f"{st.proxy}/coupon/x", timeout=5)
        line = poll_until(st.lines.json_lines, bool, what="the tcp-log line", timeout=5, interval=0.05)[0]
    for entity in (line["route"], line["service"]):
        assert isinstance(entity["created_at"], int) and before - 5 <= entity["created_at"] <= time.time() + 1
        assert entity["updated_at"] == entity["created_at"]
    assert "priority" not in line["route"]


def test_route_priority_is_an_unknown_field() -> None:
    # routes.lua:209-219: without router_flavor=expressions, `priority` is not a field, so Kong rejects it
    doc = kongconfig.load()
    doc["services"][0]["routes"][0]["priority"] = 0
    with pytest.raises(kongconfig.KongConfigError, match=re.escape("routes[0].priority: unknown field")):
        kongconfig.parse(doc)



def test_tracing_instrumentations_are_read_as_kong_reads_them() -> None:
    from otelgate.kongsim.tracing import parse_instrumentations

    # instrumentation.lua:409,422 look only at the first item: "router,all" enables router (and the root), not all
    assert parse_instrumentations("router,all") == {"router", "all"}
    assert "balancer" not in parse_instrumentations("router,all")
    assert {"router", "balancer", "dns_query"} <= parse_instrumentations("all")
    assert parse_instrumentations("off") == frozenset()
    # kong/conf_loader/parse.lua:826-836: unknown types and off-with-others are errors, with Kong's wording
    with pytest.raises(ValueError, match="invalid tracing type: tracing"):
        parse_instrumentations("router,tracing")
    with pytest.raises(ValueError, match="invalid tracing types: off, other types are mutually exclusive"):
        parse_instrumentations("off,router")


def test_dns_failure_span_records_the_resolver_error() -> None:
    # instrumentation.lua:296-304: on a failed lookup the kong.dns span gets record_error(<resolver error>) and
    # status 2; record_error adds the event "exception" with {"exception.message": err} (kong/pdk/tracing.lua:370-378);
    # the legacy client's NXDOMAIN text is "dns server error: 3 name error" (balancer/init.lua:382)
    with running_stack(upstream_host="no-such-host.invalid") as st:
        httpx.get(f"{st.proxy}/coupon/x", headers={"traceparent": f"00-{SAMPLED}-{PARENT}-01"}, timeout=10)
        dns = poll_until(lambda: [s for s in st.otlp.spans() if s.name == "kong.dns"], bool,
                         what="the kong.dns span", timeout=5, interval=0.05)[0]
        spans = trace_spans(st, SAMPLED, 2)  # the request's spans travel in one batch with kong.dns
    assert dns.status.code == 2
    assert [(e.name, {kv.key: kv.value.string_value for kv in e.attributes}) for e in dns.events] == [
        ("exception", {"exception.message": "dns server error: 3 name error"})]
    # no try was made, so the pre-created balancer span is never linked (instrumentation.lua:88-97)
    assert "kong" in names(spans) and "kong.balancer" not in names(spans)
