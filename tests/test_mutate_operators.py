"""One test per mutation operator of otelgate.mutate.operators, on small literal documents: what each mutation
changes (and only that), its path and description, and that the input is never changed."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from otelgate.mutate import operators as ops

CONFIG: dict[str, Any] = {
    "extensions": {"health_check": {"endpoint": "0.0.0.0:13133"}},
    "receivers": {
        "otlp": {"protocols": {"http": {"endpoint": "0.0.0.0:4318"}}},
        "tcp_log": {"listen_address": "0.0.0.0:54525", "operators": [
            {"type": "json_parser", "parse_from": "body", "parse_ints": True,
             "timestamp": {"parse_from": "attributes.started_at"}},
            {"type": "trace_parser", "trace_id": {"parse_from": "attributes.trace_id"}}]},
        "prometheus": {"config": {"scrape_configs": [{"job_name": "kong", "scrape_interval": "5s",
                                                      "metrics_path": "/metrics"}]}},
    },
    "processors": {"memory_limiter": {}, "attributes/kong": {"actions": [
        {"key": "kong.deployment.name", "value": "x", "action": "insert"}]}, "batch": {"timeout": "200ms"}},
    "exporters": {"otlp_http/dynatrace": {"endpoint": "${env:DT_ENDPOINT}",
                                          "headers": {"Authorization": "Api-Token ${env:DT_API_TOKEN}"},
                                          "retry_on_failure": {"enabled": True}}},
    "service": {"pipelines": {
        "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "attributes/kong", "batch"],
                   "exporters": ["otlp_http/dynatrace"]},
        "logs": {"receivers": ["otlp", "tcp_log"], "processors": ["batch"], "exporters": ["otlp_http/dynatrace"]},
    }},
}

KONG: dict[str, Any] = {"_format_version": "3.0", "plugins": [
    {"name": "opentelemetry", "config": {"traces_endpoint": "http://collector.ns.svc:4318/v1/traces",
                                         "resource_attributes": {"service.name": "kong-otel"}}},
    {"name": "prometheus", "config": {"status_code_metrics": True, "per_consumer": False}},
    {"name": "tcp-log", "config": {"host": "collector.ns.svc", "port": 54525,
                                   "custom_fields_by_lua": {"trace_id": "return 1\n"}}},
]}

INSTRUMENTATION: dict[str, Any] = {"kind": "Instrumentation", "spec": {
    "exporter": {"endpoint": "http://collector.ns.svc:4318"},
    "propagators": ["tracecontext", "baggage"],
    "sampler": {"type": "parentbased_traceidratio", "argument": "1.0"},
    "python": {"env": [{"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "http/protobuf"},
                       {"name": "OTEL_LOGS_EXPORTER", "value": "otlp"}]},
}}


def mutations(name: str, doc: Mapping[str, Any]) -> dict[str, ops.Mutation]:
    before = copy.deepcopy(doc)
    out = {m.path: m for m in ops.OPERATORS[name].generate(doc)}
    assert doc == before, f"{name} changed its input"
    for m in out.values():
        assert m.document != doc and m.description, m
    return out


def test_every_operator_is_tested_here_and_documented() -> None:
    tested = {name.removeprefix("test_").replace("_", "-") for name in globals() if name.startswith("test_")}
    assert set(ops.OPERATORS) <= tested, sorted(set(ops.OPERATORS) - tested)
    assert all(op.summary for op in ops.OPERATORS.values())


def test_remove_processor() -> None:
    found = mutations("remove-processor", CONFIG)
    assert len(found) == 4
    m = found["service.pipelines.traces.processors.attributes/kong"]
    assert m.document["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter", "batch"]
    assert m.document["service"]["pipelines"]["logs"] == CONFIG["service"]["pipelines"]["logs"]


def test_remove_receiver() -> None:
    found = mutations("remove-receiver", CONFIG)
    assert set(found) == {"service.pipelines.traces.receivers.otlp", "service.pipelines.logs.receivers.otlp",
                          "service.pipelines.logs.receivers.tcp_log"}
    assert found["service.pipelines.logs.receivers.tcp_log"].document["service"]["pipelines"]["logs"][
        "receivers"] == ["otlp"]


def test_remove_exporter() -> None:
    found = mutations("remove-exporter", CONFIG)
    assert len(found) == 2
    assert found["service.pipelines.logs.exporters.otlp_http/dynatrace"].document["service"]["pipelines"]["logs"][
        "exporters"] == []


def test_swap_processors() -> None:
    found = mutations("swap-processors", CONFIG)
    assert set(found) == {"service.pipelines.traces.processors.memory_limiter<>attributes/kong",
                          "service.pipelines.traces.processors.attributes/kong<>batch"}
    m = found["service.pipelines.traces.processors.attributes/kong<>batch"]
    assert m.document["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter", "batch", "attributes/kong"]


def test_change_listen_port() -> None:
    found = mutations("change-listen-port", CONFIG)
    assert {p: m.document for p, m in found.items()}.keys() == {
        "receivers.otlp.protocols.http.endpoint", "receivers.tcp_log.listen_address",
        "extensions.health_check.endpoint"}
    assert found["receivers.tcp_log.listen_address"].document["receivers"]["tcp_log"]["listen_address"] == \
        "0.0.0.0:54526"
    # ${env:...} endpoints are not host:port literals: not mutated here
    assert not any(p.startswith("exporters.") for p in found)


def test_auth_header() -> None:
    found = mutations("auth-header", CONFIG)
    scheme = found["exporters.otlp_http/dynatrace.headers.Authorization.scheme"].document
    assert scheme["exporters"]["otlp_http/dynatrace"]["headers"] == {"Authorization": "Bearer ${env:DT_API_TOKEN}"}
    name = found["exporters.otlp_http/dynatrace.headers.Authorization.name"].document
    assert name["exporters"]["otlp_http/dynatrace"]["headers"] == {"X-Authorization": "Api-Token ${env:DT_API_TOKEN}"}


def test_attributes_action() -> None:
    found = mutations("attributes-action", CONFIG)
    action = found["processors.attributes/kong.actions[0].action"].document["processors"]["attributes/kong"]
    assert action["actions"][0]["action"] == "update"
    key = found["processors.attributes/kong.actions[0].key"].document["processors"]["attributes/kong"]
    assert key["actions"][0]["key"] == "kong.deployment.name_"


def test_tcplog_drop_operator() -> None:
    found = mutations("tcplog-drop-operator", CONFIG)
    m = found["receivers.tcp_log.operators[1:trace_parser]"]
    assert [o["type"] for o in m.document["receivers"]["tcp_log"]["operators"]] == ["json_parser"]


def test_tcplog_parse_from() -> None:
    found = mutations("tcplog-parse-from", CONFIG)
    assert len(found) == 3
    body = found["receivers.tcp_log.operators[0:json_parser].parse_from"].document
    assert body["receivers"]["tcp_log"]["operators"][0]["parse_from"] == "attributes.body"
    trace = found["receivers.tcp_log.operators[1:trace_parser].trace_id.parse_from"].document
    assert trace["receivers"]["tcp_log"]["operators"][1]["trace_id"]["parse_from"] == "attributes.trace_id_"


def test_flip_boolean_collector() -> None:
    found = mutations("flip-boolean-collector", CONFIG)
    assert set(found) == {"receivers.tcp_log.operators[0].parse_ints",
                          "exporters.otlp_http/dynatrace.retry_on_failure.enabled"}
    doc = found["receivers.tcp_log.operators[0].parse_ints"].document
    assert doc["receivers"]["tcp_log"]["operators"][0]["parse_ints"] is False


def test_scrape_setting() -> None:
    found = mutations("scrape-setting", CONFIG)
    job = found["receivers.prometheus.config.scrape_configs[kong].scrape_interval"].document["receivers"][
        "prometheus"]["config"]["scrape_configs"][0]
    assert job == {"job_name": "kong", "scrape_interval": "60s", "metrics_path": "/metrics"}
    assert "receivers.prometheus.config.scrape_configs[kong].metrics_path" in found


def test_batch_timeout() -> None:
    found = mutations("batch-timeout", CONFIG)
    assert found["processors.batch.timeout"].document["processors"]["batch"] == {"timeout": "5s"}


def test_remove_plugin() -> None:
    found = mutations("remove-plugin", KONG)
    assert [p["name"] for p in found["plugins[tcp-log]"].document["plugins"]] == ["opentelemetry", "prometheus"]


def test_flip_boolean_kong() -> None:
    found = mutations("flip-boolean-kong", KONG)
    assert set(found) == {"plugins[prometheus].config.status_code_metrics", "plugins[prometheus].config.per_consumer"}
    doc = found["plugins[prometheus].config.per_consumer"].document
    assert doc["plugins"][1]["config"] == {"status_code_metrics": True, "per_consumer": True}


def test_plugin_endpoint() -> None:
    found = mutations("plugin-endpoint", KONG)
    traces = {part: found[f"plugins[opentelemetry].config.traces_endpoint.{part}"].document["plugins"][0]["config"][
        "traces_endpoint"] for part in ("host", "port", "path")}
    assert traces == {"host": "http://otel-collector:4318/v1/traces", "port": "http://collector.ns.svc:4317/v1/traces",
                      "path": "http://collector.ns.svc:4318/v1/logs"}
    assert found["plugins[tcp-log].config.port"].document["plugins"][2]["config"]["port"] == 54526
    assert found["plugins[tcp-log].config.host"].document["plugins"][2]["config"]["host"] == "otel-collector"


def test_sampling_zero() -> None:
    found = mutations("sampling-zero", KONG)
    assert found["plugins[opentelemetry].config.sampling_rate"].document["plugins"][0]["config"]["sampling_rate"] == 0


def test_propagation() -> None:
    found = mutations("propagation", KONG)
    assert {p: m.document["plugins"][0]["config"]["propagation"] for p, m in found.items()} == {
        "plugins[opentelemetry].config.propagation.extract": {"extract": ["b3"]},
        "plugins[opentelemetry].config.propagation.inject": {"inject": ["b3"]},
        "plugins[opentelemetry].config.propagation.default_format": {"default_format": "b3"}}


def test_custom_fields_lua() -> None:
    found = mutations("custom-fields-lua", KONG)
    assert len(found) == len(ops.LUA_VARIANTS)
    snippets = {p.rsplit(".", 1)[-1]: m.document["plugins"][2]["config"]["custom_fields_by_lua"]
                for p, m in found.items()}
    assert snippets["removed"] == {}
    assert snippets["returns-nil"] == {"trace_id": "return nil\n"}
    assert "os." in snippets["forbidden-global"]["trace_id"]
    assert "error(" in snippets["runtime-error"]["trace_id"]


def test_resource_attribute() -> None:
    found = mutations("resource-attribute", KONG)
    doc = found["plugins[opentelemetry].config.resource_attributes.service.name"].document
    assert doc["plugins"][0]["config"]["resource_attributes"] == {"service.name": "kong-otel-mutant"}


def test_propagators() -> None:
    found = mutations("propagators", INSTRUMENTATION)
    assert {p: m.document["spec"]["propagators"] for p, m in found.items()} == {
        "spec.propagators.tracecontext": ["baggage"], "spec.propagators.baggage": ["tracecontext"],
        "spec.propagators=b3": ["b3"]}


def test_sampler() -> None:
    found = mutations("sampler", INSTRUMENTATION)
    assert found["spec.sampler.type=always_off"].document["spec"]["sampler"] == {"type": "always_off",
                                                                                 "argument": "1.0"}
    assert found["spec.sampler.argument=0"].document["spec"]["sampler"]["argument"] == "0"
    assert len(found) == 5


def test_exporter_endpoint() -> None:
    found = mutations("exporter-endpoint", INSTRUMENTATION)
    assert found["spec.exporter.endpoint.port"].document["spec"]["exporter"]["endpoint"] == \
        "http://collector.ns.svc:4317"
    assert found["spec.exporter.endpoint.host"].document["spec"]["exporter"]["endpoint"] == "http://otel-collector:4318"


def test_env_protocol() -> None:
    found = mutations("env-protocol", INSTRUMENTATION)
    env = found["spec.python.env.OTEL_EXPORTER_OTLP_PROTOCOL"].document["spec"]["python"]["env"]
    assert env[0] == {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "grpc"}


def test_drop_env() -> None:
    found = mutations("drop-env", INSTRUMENTATION)
    env = found["spec.python.env.OTEL_LOGS_EXPORTER"].document["spec"]["python"]["env"]
    assert env == [{"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "http/protobuf"}]


def test_an_operator_without_a_docstring_or_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="docstring"):
        ops.operator("no-doc-here", ops.KONG)(lambda doc: iter(()))
    with pytest.raises(ValueError, match="twice"):
        ops.operator("remove-plugin", ops.KONG)(ops.remove_plugin)
