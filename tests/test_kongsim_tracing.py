"""Fidelity of the Kong simulator's traces (a test double of Kong 3.9) against
docs/reference/kong-3.9.md: spans, resource/scope/encoding, export, propagation, sampling. Real HTTP on
127.0.0.1: a tiny upstream, a tiny OTLP receiver, the simulator on its own loop."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from kongsim_fakes import OtlpReceiver, running_stack

from otelgate.kongsim.propagation import (
    ExtractedContext,
    PropagationParams,
    extract_b3,
    extract_w3c,
    propagation_params,
)
from otelgate.kongsim.tracing import sample_trace_id
from otelgate.waiting import poll_until

SAMPLED_AT_HALF = "92a54b3e1a7c4f2da9e44b8a6f3e1dab"      # always sampled at 0.5
NOT_SAMPLED_AT_HALF = "4bf92f3577b34da6a3ce929d0e0e4736"  # never sampled at 0.5
PARENT = "00f067aa0ba902b7"


def traceparent(trace_id: str, flags: str = "01") -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{PARENT}-{flags}"}


def attrs(span: Any) -> dict[str, tuple[str, Any]]:
    """attribute -> (AnyValue kind, value), so the OTLP typing is part of every comparison."""
    out = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = (kind, getattr(kv.value, kind))
    return out


def spans_of(otlp: OtlpReceiver, trace_id: str, min_count: int, timeout: float = 5.0) -> list[Any]:
    return poll_until(lambda: [s for s in otlp.spans() if s.trace_id.hex() == trace_id],
                      lambda spans: len(spans) >= min_count, what=f"{min_count} spans of trace {trace_id}",
                      timeout=timeout, interval=0.05)


# ------------------------------------------------------------------------------------------------ sampler

def test_sampler_decides_kongs_fixed_ids_like_the_reference() -> None:
    # kong-3.9.md#kongs-fixed-test-trace-ids
    assert sample_trace_id(bytes.fromhex(SAMPLED_AT_HALF), 0.5) is True
    assert sample_trace_id(bytes.fromhex(NOT_SAMPLED_AT_HALF), 0.5) is False
    # the fractions kong-3.9.md#kongs-fixed-test-trace-ids tabulates (first 8 bytes little-endian / 2**64)
    assert int.from_bytes(bytes.fromhex(SAMPLED_AT_HALF)[:8], "little") / 2**64 == pytest.approx(0.177, abs=1e-3)
    assert int.from_bytes(bytes.fromhex(NOT_SAMPLED_AT_HALF)[:8], "little") / 2**64 == pytest.approx(0.650, abs=1e-3)
    assert sample_trace_id(bytes.fromhex(NOT_SAMPLED_AT_HALF), 1.0) is True
    assert sample_trace_id(bytes.fromhex(SAMPLED_AT_HALF), 0.0) is False
    assert sample_trace_id(bytes.fromhex(SAMPLED_AT_HALF), 0.18) is True
    assert sample_trace_id(bytes.fromhex(SAMPLED_AT_HALF), 0.17) is False


# ------------------------------------------------------------------------------------------------ extraction

def test_w3c_extractor_rules() -> None:
    ctx = extract_w3c({"traceparent": f"00-{SAMPLED_AT_HALF}-{PARENT}-01"})
    assert ctx == ExtractedContext(trace_id=bytes.fromhex(SAMPLED_AT_HALF), span_id=bytes.fromhex(PARENT),
                                   should_sample=True, w3c_flags=1)
    for bad in (f"01-{SAMPLED_AT_HALF}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01",
                f"00-{SAMPLED_AT_HALF}-{'0' * 16}-01", f"00-{SAMPLED_AT_HALF}-{PARENT}-1", "garbage"):
        assert extract_w3c({"traceparent": bad}) is None, bad


def test_b3_extractor_single_and_multi() -> None:
    single = extract_b3({"b3": f"{SAMPLED_AT_HALF}-{PARENT}-1-{'a' * 16}"})
    assert single is not None and single.single_header and single.should_sample is True
    assert single.parent_id == bytes.fromhex("a" * 16)
    multi = extract_b3({"x-b3-traceid": SAMPLED_AT_HALF, "x-b3-spanid": PARENT, "x-b3-sampled": "0"})
    assert multi is not None and not multi.single_header and multi.should_sample is False
    assert extract_b3({"unrelated": "1"}) is None


def test_header_type_fallback_and_explicit_propagation() -> None:
    assert propagation_params({"header_type": "preserve", "propagation": {"default_format": "w3c"}}) == \
        PropagationParams(("b3", "w3c", "jaeger", "ot", "datadog", "aws", "gcp"), None, ("preserve",), "w3c")
    assert propagation_params({"header_type": "ignore", "propagation": {"default_format": "w3c"}}) == \
        PropagationParams(None, None, ("w3c",), "w3c")
    assert propagation_params({"header_type": "b3", "propagation": {"default_format": "w3c"}}).inject == \
        ("preserve", "b3")
    # any of extract/clear/inject set: the record is used as is, unset parts stay unset
    assert propagation_params({"header_type": "preserve", "propagation": {"inject": [], "default_format": "w3c"}}) \
        == PropagationParams(None, None, (), "w3c")


# ------------------------------------------------------------------------------------------------ one request

EXPECTED_SPANS = {  # name -> (kind, count): kong-3.9.md#spans-of-one-proxied-request
    "kong": (2, 1), "kong.router": (1, 1), "kong.access.plugin.opentelemetry": (1, 1), "kong.dns": (3, 1),
    "kong.balancer": (3, 1), "kong.header_filter.plugin.opentelemetry": (1, 1),
}


def test_one_request_span_set_attributes_resource_scope_and_hierarchy() -> None:
    node_id = "0b7d1f9e-3c2a-4e5f-8a6b-7c8d9e0f1a2b"
    with running_stack(node_id=node_id) as st:
        response = httpx.get(f"{st.proxy}/coupon/coupons?limit=2", headers=traceparent(SAMPLED_AT_HALF),
                             timeout=5)
        assert response.status_code == 200
        request_id = response.headers["x-kong-request-id"]
        spans = spans_of(st.otlp, SAMPLED_AT_HALF, len(EXPECTED_SPANS))
        upstream_traceparent = st.upstream.requests[-1].headers["traceparent"]
        post = st.otlp.posts[0]
        proxy_port = st.sim.listeners.proxy_port
        upstream_port = int(st.upstream.url.rsplit(":", 1)[1])

    # span names, kinds, counts (kong-3.9.md#span-names-and-kinds)
    assert sorted((s.name, s.kind) for s in spans) == sorted((n, k) for n, (k, _c) in EXPECTED_SPANS.items())
    by_name = {s.name: s for s in spans}
    root = by_name["kong"]

    # root attributes: exact set, values and OTLP types (kong-3.9.md#root-span-attributes)
    assert attrs(root) == {
        "http.method": ("string_value", "GET"),
        "http.url": ("string_value", "http://127.0.0.1/coupon/coupons?limit=2"),  # no port, query kept
        "http.host": ("string_value", "127.0.0.1"),
        "http.scheme": ("string_value", "http"),
        "http.flavor": ("string_value", "1.1"),
        "http.client_ip": ("string_value", "127.0.0.1"),
        "net.peer.ip": ("string_value", "127.0.0.1"),
        "kong.request.id": ("string_value", request_id),
        "http.status_code": ("int_value", 200),   # the only int attribute
        "http.route": ("string_value", "/coupon"),
    }
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert f":{proxy_port}" not in attrs(root)["http.url"][1]

    # balancer and dns attributes: numbers are doubles (kong-3.9.md#resource-scope-and-attribute-types)
    assert attrs(by_name["kong.balancer"]) == {
        "try_count": ("double_value", 1.0), "net.peer.ip": ("string_value", "127.0.0.1"),
        "net.peer.port": ("double_value", float(upstream_port)), "net.peer.name": ("string_value", "localhost"),
    }
    assert attrs(by_name["kong.dns"]) == {
        "dns.record.domain": ("string_value", "localhost"), "dns.record.port": ("double_value", float(upstream_port)),
        "dns.record.ip": ("string_value", "127.0.0.1"),
    }
    for name in ("kong.router", "kong.access.plugin.opentelemetry", "kong.header_filter.plugin.opentelemetry"):
        assert attrs(by_name[name]) == {}
    # status only on error
    assert all(not s.HasField("status") for s in spans)

    # hierarchy: one trace = the incoming one; root's parent = incoming span; all others under root
    assert {s.trace_id.hex() for s in spans} == {SAMPLED_AT_HALF}
    assert root.parent_span_id.hex() == PARENT
    assert {s.parent_span_id for s in spans if s is not root} == {root.span_id}
    assert all(len(s.span_id) == 8 for s in spans)
    # timing: root covers its children; the balancer span ends with the root (body filter end)
    assert all(root.start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano
               <= root.end_time_unix_nano for s in spans)
    assert by_name["kong.balancer"].end_time_unix_nano == root.end_time_unix_nano

    # upstream got traceparent whose parent is the kong.balancer span (kong-3.9.md#injection)
    assert upstream_traceparent == f"00-{SAMPLED_AT_HALF}-{by_name['kong.balancer'].span_id.hex()}-01"

    # resource and scope, one resource_spans -> one scope_spans
    assert len(post.request.resource_spans) == 1 and len(post.request.resource_spans[0].scope_spans) == 1
    resource = {kv.key: kv.value.string_value for kv in post.request.resource_spans[0].resource.attributes}
    assert resource == {"service.name": "kong-otel", "service.instance.id": node_id, "service.version": "3.9.1"}
    scope = post.request.resource_spans[0].scope_spans[0].scope
    assert (scope.name, scope.version) == ("kong-internal", "0.1.0")
    assert post.headers["content-type"] == "application/x-protobuf"


def test_request_without_context_starts_a_trace_and_injects_traceparent() -> None:
    with running_stack() as st:
        httpx.get(f"{st.proxy}/pricing/price?id=1", timeout=5)
        seen = st.upstream.requests[-1]
        match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", seen.headers["traceparent"])
        assert match, seen.headers
        spans = spans_of(st.otlp, match.group(1), len(EXPECTED_SPANS))
    root = next(s for s in spans if s.name == "kong")
    assert root.parent_span_id == b""  # no incoming context
    assert next(s for s in spans if s.name == "kong.balancer").span_id.hex() == match.group(2)


# ------------------------------------------------------------------------------------------------ sampling

def test_plugin_sampling_rate_supersedes_global_and_incoming_01_does_not_force() -> None:
    # global rate 1.0 would sample everything; the plugin's 0.5 decides per trace id (kong-3.9.md#sampling-decision)
    with running_stack({"opentelemetry": {"sampling_rate": 0.5}}, sampling_rate=1.0) as st:
        httpx.get(f"{st.proxy}/coupon/a", headers=traceparent(NOT_SAMPLED_AT_HALF, "01"), timeout=5)
        not_sampled_header = st.upstream.requests[-1].headers["traceparent"]
        httpx.get(f"{st.proxy}/coupon/b", headers=traceparent(SAMPLED_AT_HALF, "01"), timeout=5)
        spans_of(st.otlp, SAMPLED_AT_HALF, len(EXPECTED_SPANS))
        # the queue is FIFO: the earlier request's spans would have been sent first
        assert not [s for s in st.otlp.spans() if s.trace_id.hex() == NOT_SAMPLED_AT_HALF]
    assert not_sampled_header.endswith("-00")  # injected with the decision, trace id preserved
    assert NOT_SAMPLED_AT_HALF in not_sampled_header


def test_global_rate_applies_when_plugin_rate_is_unset() -> None:
    with running_stack(sampling_rate=0.5) as st:
        httpx.get(f"{st.proxy}/coupon/a", headers=traceparent(NOT_SAMPLED_AT_HALF), timeout=5)
        httpx.get(f"{st.proxy}/coupon/b", headers=traceparent(SAMPLED_AT_HALF), timeout=5)
        spans_of(st.otlp, SAMPLED_AT_HALF, len(EXPECTED_SPANS))
        assert not [s for s in st.otlp.spans() if s.trace_id.hex() == NOT_SAMPLED_AT_HALF]


def test_incoming_00_forces_not_sampled_but_still_injects() -> None:
    with running_stack(sampling_rate=1.0) as st:
        httpx.get(f"{st.proxy}/coupon/a", headers=traceparent(SAMPLED_AT_HALF, "00"), timeout=5)
        injected = st.upstream.requests[-1].headers["traceparent"]
        httpx.get(f"{st.proxy}/coupon/b", headers=traceparent(NOT_SAMPLED_AT_HALF, "01"), timeout=5)
        spans_of(st.otlp, NOT_SAMPLED_AT_HALF, len(EXPECTED_SPANS))
        assert not [s for s in st.otlp.spans() if s.trace_id.hex() == SAMPLED_AT_HALF]
    assert re.fullmatch(rf"00-{SAMPLED_AT_HALF}-[0-9a-f]{{16}}-00", injected)


# ------------------------------------------------------------------------------------------------ propagation

def test_preserve_answers_b3_with_b3_and_parent_is_the_root() -> None:
    with running_stack() as st:
        httpx.get(f"{st.proxy}/coupon/x", headers={"x-b3-traceid": SAMPLED_AT_HALF, "x-b3-spanid": PARENT,
                                                    "x-b3-sampled": "1"}, timeout=5)
        seen = st.upstream.requests[-1].headers
        spans = spans_of(st.otlp, SAMPLED_AT_HALF, len(EXPECTED_SPANS))
    by_name = {s.name: s for s in spans}
    assert "traceparent" not in seen
    assert seen["x-b3-traceid"] == SAMPLED_AT_HALF and seen["x-b3-sampled"] == "1"
    assert seen["x-b3-spanid"] == by_name["kong.balancer"].span_id.hex()
    assert seen["x-b3-parentspanid"] == by_name["kong"].span_id.hex()  # the balancer span's parent
    assert by_name["kong"].parent_span_id.hex() == PARENT


def test_b3_single_and_ignore_and_clear() -> None:
    overrides = {"opentelemetry": {"propagation": {"extract": ["w3c"], "inject": ["b3-single", "w3c"],
                                                   "clear": ["x-legacy-trace"], "default_format": "w3c"}}}
    with running_stack(overrides) as st:
        httpx.get(f"{st.proxy}/coupon/x", headers={**traceparent(SAMPLED_AT_HALF), "x-legacy-trace": "1"},
                  timeout=5)
        seen = st.upstream.requests[-1].headers
    assert "x-legacy-trace" not in seen
    assert re.fullmatch(rf"{SAMPLED_AT_HALF}-[0-9a-f]{{16}}-1-[0-9a-f]{{16}}", seen["b3"])
    assert seen["traceparent"].startswith(f"00-{SAMPLED_AT_HALF}-")

    with running_stack({"opentelemetry": {"header_type": "ignore"}}) as st:
        httpx.get(f"{st.proxy}/coupon/x", headers=traceparent(SAMPLED_AT_HALF), timeout=5)
        seen = st.upstream.requests[-1].headers
    assert SAMPLED_AT_HALF not in seen["traceparent"]  # a new trace


def test_inject_empty_list_sends_no_context_and_sets_no_trace_id() -> None:
    overrides = {"opentelemetry": {"propagation": {"inject": [], "default_format": "w3c"}},
                 "tcp-log": {"custom_fields_by_lua": None}}
    with running_stack(overrides) as st:
        httpx.get(f"{st.proxy}/coupon/x", headers=traceparent(SAMPLED_AT_HALF), timeout=5)
        seen = st.upstream.requests[-1].headers
        line = poll_until(st.lines.json_lines, bool, what="one tcp-log line", timeout=5, interval=0.05)[0]
    assert seen["traceparent"] == f"00-{SAMPLED_AT_HALF}-{PARENT}-01"  # passed through untouched
    assert "trace_id" not in line


def test_tracing_off_still_propagates_but_exports_nothing() -> None:
    with running_stack(instrumentations="off") as st:
        httpx.get(f"{st.proxy}/coupon/x", timeout=5)
        seen = st.upstream.requests[-1].headers
        time.sleep(0.3)  # nothing can arrive: assert the queue stayed empty rather than waiting long
        assert st.sim.node.runtime is not None and st.sim.node.runtime.otel_exporter is not None
        assert st.sim.node.runtime.otel_exporter.sent_spans == 0 and not st.otlp.posts
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", seen["traceparent"])


def test_response_header_for_traceid() -> None:
    with running_stack({"opentelemetry": {"http_response_header_for_traceid": "x-trace-id"}}) as st:
        response = httpx.get(f"{st.proxy}/coupon/x", headers=traceparent(SAMPLED_AT_HALF), timeout=5)
    assert response.headers["x-trace-id"] == SAMPLED_AT_HALF


# ------------------------------------------------------------------------------------------------ export

def test_batches_respect_max_batch_size_and_configured_headers() -> None:
    overrides = {"opentelemetry": {"queue.max_batch_size": 4, "queue.max_coalescing_delay": 0.3,
                                   "headers.Authorization": "Api-Token dt0c01.test"}}
    with running_stack(overrides) as st:
        for index in range(3):
            httpx.get(f"{st.proxy}/coupon/{index}", timeout=5)
        poll_until(lambda: len(st.otlp.spans()), lambda n: n >= 18, what="18 spans", timeout=5, interval=0.05)
        sizes = [sum(len(ss.spans) for rs in p.request.resource_spans for ss in rs.scope_spans)
                 for p in st.otlp.posts]
        headers = st.otlp.posts[0].headers
    assert max(sizes) <= 4 and sum(sizes) == 18, sizes
    assert headers["authorization"] == "Api-Token dt0c01.test"
    assert headers["content-type"] == "application/x-protobuf"


def test_default_coalescing_delay_is_about_one_second() -> None:
    with running_stack({"opentelemetry": {"queue.max_coalescing_delay": None}}) as st:
        sent = time.monotonic()
        httpx.get(f"{st.proxy}/coupon/x", timeout=5)
        httpx.get(f"{st.proxy}/coupon/y", timeout=5)
        poll_until(lambda: len(st.otlp.spans()), lambda n: n >= 12, what="12 spans", timeout=5, interval=0.02)
        waited = time.monotonic() - sent
        posts = len(st.otlp.posts)
    assert 0.9 <= waited < 2.5, waited
    assert posts == 1  # both requests coalesced into one batch


def test_failed_batches_are_retried_for_any_non_200() -> None:
    with running_stack() as st:
        st.otlp.statuses = [400, 503]
        httpx.get(f"{st.proxy}/coupon/x", headers=traceparent(SAMPLED_AT_HALF), timeout=5)
        spans = spans_of(st.otlp, SAMPLED_AT_HALF, len(EXPECTED_SPANS))
        assert st.otlp.statuses == []
    assert len(spans) == len(EXPECTED_SPANS)  # delivered once, after two refusals
