"""Fidelity of the Kong simulator's Prometheus exposition (a test double of Kong 3.9) against
docs/reference/kong-3.9.md (#prometheus, #status-api): names, HELP texts, TYPE lines, label order, buckets,
``le`` formatting, alphabetical families, gating."""

from __future__ import annotations

import re
from typing import Any

import httpx
from kongsim_fakes import running_stack

from otelgate import promtext
from otelgate.kongsim.prometheus import KONG_LATENCY_BUCKETS, UPSTREAM_LATENCY_BUCKETS, NodeStats, Registry
from otelgate.waiting import poll_until

# docs/reference/kong-3.9.md#help-texts (read from Kong's exporter.lua at 3.9.1)
HELP = {
    "kong_http_requests_total": "HTTP status codes per consumer/service/route in Kong",
    "kong_kong_latency_ms": "Latency added by Kong and enabled plugins for each service/route in Kong",
    "kong_bandwidth_bytes": "Total bandwidth (ingress/egress) throughput in bytes",
    "kong_request_latency_ms": "Total latency incurred during requests for each service/route in Kong",
    "kong_upstream_latency_ms": "Latency added by upstream response for each service/route in Kong",
    "kong_datastore_reachable": "Datastore reachable from Kong, 0 is unreachable",
    "kong_node_info": "Kong Node metadata information",
    "kong_nginx_requests_total": "Number of requests total",
    "kong_nginx_connections_total": "Number of connections by subsystem",
    "kong_nginx_timers": "Number of nginx timers",
    "kong_nginx_metric_errors_total": "Number of nginx-lua-prometheus errors",
    "kong_memory_lua_shared_dict_bytes": "Allocated slabs in bytes in a shared_dict",
}
TYPES = {"kong_http_requests_total": "counter", "kong_kong_latency_ms": "histogram",
         "kong_bandwidth_bytes": "counter", "kong_request_latency_ms": "histogram",
         "kong_upstream_latency_ms": "histogram", "kong_datastore_reachable": "gauge", "kong_node_info": "gauge",
         "kong_nginx_metric_errors_total": "counter", "kong_nginx_timers": "gauge"}
SERIES = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, list[tuple[str, str]], str]]]:
    """(HELP/TYPE lines as (kind, family, text), series as (name, [(label, value)], value))."""
    meta, series = [], []
    for line in text.splitlines():
        if line.startswith("# "):
            kind, family, rest = line[2:].split(" ", 2)
            meta.append((kind, family, rest))
        else:
            match = SERIES.match(line)
            assert match, f"not an exposition line: {line!r}"
            series.append((match["name"], LABEL.findall(match["labels"] or ""), match["value"]))
    return meta, series


def family_of(name: str) -> str:
    return re.sub(r"_(bucket|count|sum)$", "", name) if "latency_ms" in name else name


def scrape(status_url: str) -> httpx.Response:
    return httpx.get(f"{status_url}/metrics", timeout=5)


def test_exposition_for_a_known_request_mix() -> None:
    node_id = "7f8e9d0c-1b2a-4c3d-8e9f-0a1b2c3d4e5f"
    with running_stack(node_id=node_id) as st:
        for path in ("/coupon/coupons", "/coupon/coupons", "/pricing/status/500", "/nowhere"):
            httpx.get(st.proxy + path, timeout=5)
        response = poll_until(lambda: scrape(st.status), lambda r: 'code="500"' in r.text,
                              what="the request mix in /metrics", timeout=5, interval=0.05)
    assert response.headers["content-type"] == "text/plain; charset=UTF-8"
    meta, series = parse(response.text)
    # Prometheus' own parser reads it too (this test's parser stays literal: prometheus_client renames a counter's
    # samples to <name>_total, and the exact names and label order are what is checked here)
    assert len(promtext.samples(response.text)) == len(series)

    # HELP then TYPE, once per family, before its first series; families sorted alphabetically
    helps = {family: text for kind, family, text in meta if kind == "HELP"}
    types = {family: text for kind, family, text in meta if kind == "TYPE"}
    for family, text in HELP.items():
        assert helps[family] == text, family
    for family, typ in TYPES.items():
        assert types[family] == typ, family
    families_in_order = [family for kind, family, _ in meta if kind == "HELP"]
    assert families_in_order == sorted(families_in_order)
    lines = response.text.splitlines()
    for family in families_in_order:
        index = lines.index(f"# HELP {family} {helps[family]}")
        assert lines[index + 1] == f"# TYPE {family} {types[family]}"
        assert family_of(SERIES.match(lines[index + 2])["name"]) == family  # type: ignore[index]
    keys = [f"{n}{{{','.join(f'{k}={v}' for k, v in labels)}}}" for n, labels, _ in series]
    assert len(keys) == len(set(keys)), "every series once"

    # kong_http_requests_total: label order, values; the no-route request records nothing
    # (docs/reference/kong-3.9.md#metrics-and-labels)
    requests = {tuple(labels): value for name, labels, value in series if name == "kong_http_requests_total"}
    assert requests == {
        (("service", "coupon"), ("route", "coupon-route"), ("code", "200"), ("source", "service"),
         ("workspace", "default"), ("consumer", "")): "2",
        (("service", "pricing"), ("route", "pricing-route"), ("code", "500"), ("source", "service"),
         ("workspace", "default"), ("consumer", "")): "1",
    }
    assert 'kong_http_requests_total{service="coupon",route="coupon-route",code="200",source="service",' \
           'workspace="default",consumer=""} 2' in lines  # docs/reference/kong-3.9.md#help-texts, literally

    # histograms: label order service, route, workspace, le; le without padding; +Inf last; cumulative
    for family, buckets in (("kong_kong_latency_ms", KONG_LATENCY_BUCKETS),
                            ("kong_upstream_latency_ms", UPSTREAM_LATENCY_BUCKETS),
                            ("kong_request_latency_ms", UPSTREAM_LATENCY_BUCKETS)):
        coupon = [(labels, value) for name, labels, value in series if name == f"{family}_bucket"
                  and ("service", "coupon") in labels]
        assert all([k for k, _ in labels] == ["service", "route", "workspace", "le"] for labels, _ in coupon)
        les = [dict(labels)["le"] for labels, _ in coupon]
        allowed = [str(b) for b in buckets] + ["+Inf"]
        assert les == allowed[len(allowed) - len(les):], les  # a suffix: buckets below the value are absent
        assert les[-1] == "+Inf" and coupon[-1][1] == "2"
        counts = [int(v) for _labels, v in coupon]
        assert counts == sorted(counts)
        count = [v for n, labels, v in series if n == f"{family}_count" and ("service", "coupon") in labels]
        assert count == ["2"]
        assert [n for n, _l, _v in series if family_of(n) == family] == sorted(
            [n for n, _l, _v in series if family_of(n) == family],
            key=lambda n: ("_bucket" not in n, "_count" not in n))  # all buckets, then counts, then sums

    # bandwidth: both directions, label order, positive byte counts
    bandwidth = [(labels, v) for n, labels, v in series if n == "kong_bandwidth_bytes"]
    assert {dict(labels)["direction"] for labels, _ in bandwidth} == {"ingress", "egress"}
    assert all([k for k, _ in labels] == ["service", "route", "direction", "workspace", "consumer"]
               for labels, _ in bandwidth)
    assert all(int(v) > 0 for _labels, v in bandwidth)

    # always-present gauges (docs/reference/kong-3.9.md#metrics-and-labels)
    assert "kong_datastore_reachable 1" in lines
    assert f'kong_node_info{{node_id="{node_id}",version="3.9.1"}} 1' in lines
    assert "kong_nginx_metric_errors_total 0" in lines
    assert {dict(labels)["state"] for n, labels, _ in series if n == "kong_nginx_connections_total"} == \
        {"accepted", "active", "handled", "reading", "total", "waiting", "writing"}
    assert {dict(labels)["state"] for n, labels, _ in series if n == "kong_nginx_timers"} == {"running", "pending"}
    assert not [n for n, _l, _v in series if n == "kong_upstream_target_health"]  # no Upstream entities


def test_le_formatting_sparse_buckets_and_lua_numbers() -> None:
    registry = Registry("node")
    registry.observe("kong_latency_ms", ("svc", "rt", "default"), 3)
    registry.observe("kong_latency_ms", ("svc", "rt", "default"), 2500)
    text = registry.exposition(NodeStats(0, 0, 0, 0, 0), plugin_enabled=True)
    buckets = [sample for sample in promtext.samples(text) if sample.name == "kong_kong_latency_ms_bucket"]
    assert [bucket.labels["le"] for bucket in buckets] == \
        ["5", "7", "10", "15", "20", "30", "50", "75", "100", "200", "500", "750", "1000", "3000", "6000", "+Inf"]
    values = {bucket.labels["le"]: bucket.value for bucket in buckets}
    assert (values["5"], values["1000"], values["3000"], values["+Inf"]) == (1, 1, 2, 2)
    assert 'kong_kong_latency_ms_bucket{service="svc",route="rt",workspace="default",le="5"} 1' in text  # literally
    assert 'kong_kong_latency_ms_sum{service="svc",route="rt",workspace="default"} 2503' in text


def _message(status: int = 200, route: bool = True) -> dict[str, Any]:
    return {"service": {"name": "coupon"}, "route": {"name": "coupon-route"} if route else None,
            "workspace_name": "default", "request": {"size": 100}, "response": {"status": status, "size": 300},
            "latencies": {"kong": 1, "proxy": 12, "request": 14}}


def test_gating_exactly_as_kong() -> None:
    families = {"status_code_metrics": {"kong_http_requests_total"},
                "latency_metrics": {"kong_kong_latency_ms", "kong_upstream_latency_ms", "kong_request_latency_ms"},
                "bandwidth_metrics": {"kong_bandwidth_bytes"}}
    for flag, expected in families.items():
        registry = Registry("node")
        registry.log({flag: True}, _message(), "service")
        text = registry.exposition(NodeStats(0, 0, 0, 0, 0), plugin_enabled=True)
        present = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
        assert present & set().union(*families.values()) == expected, flag
    # no route: nothing; Kong-generated response: source "kong"; proxy -1: no upstream latency
    registry = Registry("node")
    registry.log({"status_code_metrics": True}, _message(route=False), "exit")
    registry.log({"status_code_metrics": True, "latency_metrics": True},
                 {**_message(502), "latencies": {"kong": 1, "proxy": -1, "request": 5}}, "error")
    text = registry.exposition(NodeStats(0, 0, 0, 0, 0), plugin_enabled=True)
    assert 'code="502",source="kong"' in text
    assert "kong_upstream_latency_ms" not in text
    # plugin not configured anywhere: only the node/nginx/memory gauges (local_only)
    text = registry.exposition(NodeStats(0, 0, 0, 0, 0), plugin_enabled=False)
    assert "kong_http_requests_total" not in text and "kong_nginx_metric_errors_total" not in text
    assert "kong_datastore_reachable 1" in text


def test_status_api_endpoints() -> None:
    with running_stack() as st:
        status = httpx.get(f"{st.status}/status", timeout=5).json()
        ready = httpx.get(f"{st.status}/status/ready", timeout=5)
        admin_metrics = httpx.get(f"{st.admin}/metrics", timeout=5)
    assert status["database"]["reachable"] is True and "total_requests" in status["server"]
    assert re.fullmatch(r"[0-9a-f]{32}", status["configuration_hash"])
    assert ready.status_code == 200
    assert admin_metrics.status_code == 200 and "kong_datastore_reachable 1" in admin_metrics.text
