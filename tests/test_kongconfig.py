"""manifests/kong/kong.yaml and otelgate.kongconfig: what the cluster file says, loud validation, derivation that
changes only the listed keys."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from otelgate import kongconfig
from otelgate.kongconfig import KONG_REWRITES, KongConfigError, config_diff, derive_kong_config, is_rewrite
from otelgate.kongsim.node import build_runtime

# the collector Service's DNS name (its namespace belongs to the cluster manifests; lint checks it against them)
CLUSTER_COLLECTOR = re.compile(r"kong-otel-collector\.[a-z0-9-]+\.svc\.cluster\.local")


@pytest.fixture()
def doc() -> dict[str, Any]:
    return kongconfig.load()


def _plugin(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in doc["plugins"] if p["name"] == name)


def test_cluster_file_services_routes_and_plugins(doc: dict[str, Any]) -> None:
    assert doc["_format_version"] == "3.0"
    services = {s["name"]: s for s in doc["services"]}
    # hostnames of the demo Services in one namespace (the namespace name belongs to the cluster manifests)
    urls = {name: re.fullmatch(rf"http://{name}\.([a-z0-9-]+)\.svc\.cluster\.local:8080", s["url"])
            for name, s in services.items()}
    assert set(urls) == {"coupon", "inventory", "pricing"} and all(urls.values()), services
    assert len({m.group(1) for m in urls.values() if m}) == 1
    config = kongconfig.parse(doc)
    routes = {r.name: r for s in config.services for r in s.routes}
    # strip_path defaults to true (docs/reference/kong-3.9.md#declarative-configuration)
    assert {name: (r.paths, r.strip_path) for name, r in routes.items()} == {
        "coupon-route": (("/coupon",), True),
        "inventory-route": (("/inventory",), False),
        "pricing-route": (("/pricing",), True),
    }
    otel = _plugin(doc, "opentelemetry")["config"]
    endpoint = re.fullmatch(r"http://([^:/]+):4318/v1/traces", otel["traces_endpoint"])
    assert endpoint and CLUSTER_COLLECTOR.fullmatch(endpoint.group(1)), otel["traces_endpoint"]
    assert otel["resource_attributes"] == {"service.name": "kong-otel"}
    prom = _plugin(doc, "prometheus")["config"]
    assert prom["status_code_metrics"] is prom["latency_metrics"] is prom["bandwidth_metrics"] is True
    tcp = _plugin(doc, "tcp-log")["config"]
    assert (tcp["host"], tcp["port"]) == (endpoint.group(1), 54525)
    assert set(tcp["custom_fields_by_lua"]) == {"trace_id"}
    # global plugins only: none is scoped to a service or route
    assert all(set(p) <= {"name", "config"} for p in doc["plugins"])


def test_parse_applies_kong_defaults(doc: dict[str, Any]) -> None:
    config = kongconfig.parse(doc)
    coupon = config.services[0]
    assert (coupon.connect_timeout_ms, coupon.read_timeout_ms, coupon.retries) == (60000, 60000, 5)
    otel = config.plugin("opentelemetry")
    assert otel is not None
    # the OTel plugin's default (docs/reference/kong-3.9.md#queue-defaults)
    assert otel.config["queue"]["max_batch_size"] == 200
    assert otel.config["queue"]["max_coalescing_delay"] == 1
    assert (otel.config["connect_timeout"], otel.config["send_timeout"], otel.config["read_timeout"]) == \
        (1000, 5000, 5000)
    assert otel.config["propagation"]["default_format"] == "w3c"
    assert otel.config["header_type"] == "preserve"


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["plugins"].append({"name": "rate-limiting", "config": {"minute": 5}}),
     "plugin 'rate-limiting' is not implemented by the Kong simulator"),
    (lambda d: d["plugins"][0]["config"].update(logs_endpoint="http://x:4318/v1/logs"),
     "plugins[opentelemetry].config.logs_endpoint: not implemented"),
    (lambda d: d["plugins"][1]["config"].update(statuscode_metrics=True),
     "plugins[prometheus].config.statuscode_metrics: unknown field"),
    (lambda d: d["services"][0]["routes"][0].update(methods=["GET"]),
     "services[0].routes[0].methods: not implemented by the Kong simulator"),
    (lambda d: d["services"][0]["routes"][0].update(paths=["~/coupon$"]),
     "regex path '~/coupon$' is not implemented"),
    (lambda d: d["services"][0]["routes"][0].update(path_handling="v1"),
     "path_handling: not implemented by the Kong simulator (only Kong's default 'v0'"),
    (lambda d: d.update(consumers=[{"username": "alice"}]), "consumers: top-level entity not implemented"),
    (lambda d: d["plugins"][0]["config"].update(propagation={"extract": ["datadog"], "default_format": "w3c"}),
     "extractor(s) ['datadog'] not implemented"),
    (lambda d: d["plugins"][0]["config"].update(sampling_rate=1.5), "expected a number between 0 and 1"),
    (lambda d: d["plugins"][2]["config"].pop("port"), "plugins[tcp-log].config.port: required field missing"),
    (lambda d: d.update(_format_version="1.1"), '_format_version: expected "3.0"'),
    # what the simulator does not model is refused with a clear message (docs/kong-simulator.md, "Refused at load")
    (lambda d: d.update(upstreams=[{"name": "coupon-up"}]), "upstreams: top-level entity not implemented"),
    (lambda d: d["services"][0].update(url="https://coupon.example:8443"),
     "protocol 'https' is not simulated by the Kong simulator"),
    (lambda d: d["services"][0]["routes"][0].update(protocols=["https"]), "excludes http"),
    (lambda d: d["services"][0].update(url="grpc://coupon.example:9000"), "expected an http(s) URL"),
    (lambda d: d["plugins"][0]["config"].update(header_type="jaeger"),
     "'jaeger' propagation is not simulated by the Kong simulator"),
    (lambda d: d["plugins"][0]["config"].update(propagation={"inject": ["ot"], "default_format": "w3c"}),
     "injector(s) ['ot'] not implemented"),
    (lambda d: d["plugins"][0]["config"].update(propagation={"default_format": "gcp"}),
     "'gcp' propagation is not simulated by the Kong simulator"),
    (lambda d: d["plugins"][2]["config"].update(tls=True), "tls: not implemented by the Kong simulator"),
])
def test_unsupported_or_invalid_config_is_reported_loudly(doc: dict[str, Any], mutate: Any, expected: str) -> None:
    mutate(doc)
    with pytest.raises(KongConfigError) as info:
        kongconfig.validate(doc)
    assert expected in str(info.value)


def test_all_problems_are_listed_at_once(doc: dict[str, Any]) -> None:
    doc["plugins"].append({"name": "key-auth"})
    doc["services"][1]["routes"][0]["hosts"] = ["example.com"]
    with pytest.raises(KongConfigError) as info:
        kongconfig.validate(doc)
    assert len(info.value.problems) == 2, info.value.problems


def test_known_field_with_kongs_default_is_accepted(doc: dict[str, Any]) -> None:
    doc["services"][0]["routes"][0].update(path_handling="v0", request_buffering=True, regex_priority=0)
    kongconfig.validate(doc)


def test_lua_that_does_not_compile_fails_the_load(doc: dict[str, Any]) -> None:
    _plugin(doc, "tcp-log")["config"]["custom_fields_by_lua"] = {"broken": "return ("}
    with pytest.raises(KongConfigError, match=r"custom_fields_by_lua.broken does not compile"):
        build_runtime(doc, "node", "test")


def _derive(doc: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    return derive_kong_config(
        doc, upstreams={"coupon": "http://127.0.0.1:18081", "inventory": "http://127.0.0.1:18082",
                        "pricing": "http://127.0.0.1:18083"},
        otlp_traces_endpoint="http://127.0.0.1:14318/v1/traces", tcp_log_host="127.0.0.1", tcp_log_port=15452,
        plugin_overrides=overrides)


def test_derive_changes_only_the_rewrite_keys(doc: dict[str, Any]) -> None:
    before = copy.deepcopy(doc)
    derived = _derive(doc)
    assert doc == before, "derive_kong_config must not modify its input"
    diff = config_diff(doc, derived)
    assert diff == [
        "plugins[opentelemetry].config.traces_endpoint",
        "plugins[tcp-log].config.host",
        "plugins[tcp-log].config.port",
        "services[coupon].url",
        "services[inventory].url",
        "services[pricing].url",
    ]
    assert all(is_rewrite(path) for path in diff)
    assert KONG_REWRITES  # and the Lua snippet, resource attributes, prometheus flags are byte-for-byte equal:
    for name in ("prometheus",):
        assert _plugin(derived, name) == _plugin(doc, name)
    assert _plugin(derived, "tcp-log")["config"]["custom_fields_by_lua"] == \
        _plugin(doc, "tcp-log")["config"]["custom_fields_by_lua"]
    kongconfig.validate(derived)


def test_derive_applies_explicit_overrides_only(doc: dict[str, Any]) -> None:
    overrides = {"opentelemetry": {"sampling_rate": 0.25, "queue.max_coalescing_delay": 0.1},
                 "tcp-log": {"custom_fields_by_lua": None}, "prometheus": {"status_code_metrics": False}}
    derived = _derive(doc, overrides)
    diff = config_diff(doc, derived)
    extra = [p for p in diff if not is_rewrite(p, overrides)]
    assert extra == [], f"keys changed that are neither rewrites nor overrides: {extra}"
    assert [p for p in diff if not is_rewrite(p)] == [
        "plugins[opentelemetry].config.queue", "plugins[opentelemetry].config.sampling_rate",
        "plugins[prometheus].config.status_code_metrics", "plugins[tcp-log].config.custom_fields_by_lua",
    ]
    otel = _plugin(derived, "opentelemetry")["config"]
    assert otel["sampling_rate"] == 0.25 and otel["queue"] == {"max_coalescing_delay": 0.1}
    assert "custom_fields_by_lua" not in _plugin(derived, "tcp-log")["config"]
    assert _plugin(derived, "prometheus")["config"]["status_code_metrics"] is False


def test_config_diff_sees_an_unlisted_change(doc: dict[str, Any]) -> None:
    derived = _derive(doc)
    derived["services"][0]["routes"][0]["strip_path"] = False
    diff = config_diff(doc, derived)
    assert "services[coupon].routes[coupon-route].strip_path" in diff
    assert not is_rewrite("services[coupon].routes[coupon-route].strip_path")


def test_derive_rejects_unknown_service_and_bad_override(doc: dict[str, Any]) -> None:
    with pytest.raises(KongConfigError, match=r"unknown service\(s\) \['cart'\]"):
        derive_kong_config(doc, upstreams={"cart": "http://127.0.0.1:1"}, otlp_traces_endpoint="http://x/v1/traces",
                           tcp_log_host="127.0.0.1", tcp_log_port=1)
    with pytest.raises(KongConfigError, match="not implemented"):
        _derive(doc, {"opentelemetry": {"logs_endpoint": "http://x/v1/logs"}})


def test_loads_accepts_json_and_yaml(doc: dict[str, Any]) -> None:
    import json
    assert kongconfig.loads(json.dumps(doc)) == doc
    assert kongconfig.loads(yaml.safe_dump(doc)) == doc
    with pytest.raises(KongConfigError, match="not valid"):
        kongconfig.loads("services: [unclosed")
