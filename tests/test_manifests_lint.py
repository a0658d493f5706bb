"""`otelgate lint`: clean on the real manifests, and each planted fault (in a temporary copy) gives one clear line.

Also: the collector resource's config passes `<collector> validate` (never skipped in CI or with
OTELGATE_REQUIRE_COLLECTOR=1).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelgate.cli import main as otelgate_main
from otelgate.lint import Finding, lint_manifests

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, target)
    return target


def edit(root: Path, relative: str, change: Callable[[list[dict[str, Any]]], None]) -> None:
    """Load every document of ``root/relative``, let ``change`` mutate them, write them back (comments are lost; this
    is a temporary copy)."""
    path = root / relative
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    change(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def doc_of(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name))


def plugin(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(p for p in docs[0]["plugins"] if p["name"] == name)["config"]


def container(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    return doc_of(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def set_env(docs: list[dict[str, Any]], deployment: str, name: str, value: str) -> None:
    for env in container(docs, deployment)["env"]:
        if env["name"] == name:
            env["value"] = value


def lines(findings: list[Finding]) -> list[str]:
    text = [str(f) for f in findings]
    assert all("\n" not in line for line in text), f"every finding is one line: {text}"
    return text


def only(findings: list[Finding], *fragments: str) -> str:
    """Exactly one finding, containing every fragment."""
    text = lines(findings)
    assert len(text) == 1, f"expected exactly one finding, got {len(text)}:\n" + "\n".join(text)
    for fragment in fragments:
        assert fragment in text[0], f"{fragment!r} not in {text[0]!r}"
    return text[0]


def test_real_manifests_are_clean() -> None:
    assert lines(lint_manifests(MANIFESTS)) == []


def test_copy_is_clean_before_any_fault(copy: Path) -> None:
    # the fault tests below compare against this: a clean copy means every finding comes from the planted fault
    assert lint_manifests(copy) == []


# --- the four faults the issue names ----------------------------------------------------------------------------------


def test_renamed_collector_resource(copy: Path) -> None:
    edit(copy, "otel/collector.yaml",
         lambda docs: doc_of(docs, "OpenTelemetryCollector")["metadata"].update(name="kong-otel-renamed"))
    text = lines(lint_manifests(copy))
    expected = "kong-otel-renamed-collector.otelgate-observability.svc.cluster.local"
    # every user of the collector Service is named: Kong's traces and tcp-log, the Instrumentation (+ its go env)
    assert any("kong.yaml" in t and "opentelemetry traces_endpoint" in t and expected in t for t in text), text
    assert any("kong.yaml" in t and "tcp-log host" in t and expected in t for t in text), text
    assert any("instrumentation.yaml" in t and "exporter.endpoint" in t and expected in t for t in text), text
    assert all(expected in t for t in text), text


def test_wrong_tcplog_port_in_kong_yaml(copy: Path) -> None:
    edit(copy, "kong/kong.yaml", lambda docs: plugin(docs, "tcp-log").update(port=54526))
    only(lint_manifests(copy), "manifests/kong/kong.yaml", "tcp-log port 54526", "tcp_log receiver port 54525")


def test_scrape_selector_that_matches_no_kong_pod(copy: Path) -> None:
    def change(docs: list[dict[str, Any]]) -> None:
        job = doc_of(docs, "OpenTelemetryCollector")["spec"]["config"]["receivers"]["prometheus"]["config"][
            "scrape_configs"][0]
        job["relabel_configs"][0]["regex"] = "kong-gateway"
    edit(copy, "otel/collector.yaml", change)
    only(lint_manifests(copy), "manifests/otel/collector.yaml", "scrape job kong", "drop Kong's pod")


def test_frontend_route_kong_does_not_have(copy: Path) -> None:
    checkout = "otelgate-kong-kong-proxy.otelgate-kong.svc.cluster.local:80/checkout"
    edit(copy, "app/simple-demo.yaml", lambda docs: set_env(docs, "frontend", "COUPON_SERVICE_HOST", checkout))
    only(lint_manifests(copy), "manifests/app/simple-demo.yaml", "COUPON_SERVICE_HOST", "/checkout/coupons",
         "matches no route")


# --- more faults, one per cross-reference ----------------------------------------------------------------------------


def test_scrape_port_that_is_not_the_status_api(copy: Path) -> None:
    def change(docs: list[dict[str, Any]]) -> None:
        job = doc_of(docs, "OpenTelemetryCollector")["spec"]["config"]["receivers"]["prometheus"]["config"][
            "scrape_configs"][0]
        job["relabel_configs"][1]["regex"] = "8001"
    edit(copy, "otel/collector.yaml", change)
    only(lint_manifests(copy), "drop Kong's pod", "8100")


def test_status_api_port_moved_in_kong_values(copy: Path) -> None:
    edit(copy, "kong/values.yaml", lambda docs: docs[0]["status"]["http"].update(containerPort=8101))
    only(lint_manifests(copy), "drop Kong's pod", "8101")


def test_scrape_namespace_without_kong(copy: Path) -> None:
    def change(docs: list[dict[str, Any]]) -> None:
        job = doc_of(docs, "OpenTelemetryCollector")["spec"]["config"]["receivers"]["prometheus"]["config"][
            "scrape_configs"][0]
        job["kubernetes_sd_configs"][0]["namespaces"]["names"] = ["gateway"]
    edit(copy, "otel/collector.yaml", change)
    only(lint_manifests(copy), "namespaces ['gateway'] do not include Kong's namespace 'otelgate-kong'")


def test_instrumentation_on_the_grpc_port(copy: Path) -> None:
    edit(copy, "otel/instrumentation.yaml", lambda docs: docs[0]["spec"]["exporter"].update(
        endpoint="http://kong-otel-collector.otelgate-observability.svc.cluster.local:4317"))
    only(lint_manifests(copy), "instrumentation.yaml", "port 4317 != the collector's otlp http receiver port 4318")


def test_frontend_route_that_reaches_the_wrong_path(copy: Path) -> None:
    # strip_path on /inventory: the frontend's GET /inventory would arrive at inventory as "/"
    def change(docs: list[dict[str, Any]]) -> None:
        route = next(s for s in docs[0]["services"] if s["name"] == "inventory")["routes"][0]
        route["strip_path"] = True
    edit(copy, "kong/kong.yaml", change)
    only(lint_manifests(copy), "INVENTORY_SERVICE_HOST", "as /", "check strip_path")


def test_frontend_bypassing_kong(copy: Path) -> None:
    edit(copy, "app/simple-demo.yaml", lambda docs: set_env(
        docs, "frontend", "PRICING_SERVICE_HOST", "pricing.otelgate-demo.svc.cluster.local:8080"))
    only(lint_manifests(copy), "PRICING_SERVICE_HOST", "bypasses Kong")


def test_exporter_endpoint_not_the_sink_service(copy: Path) -> None:
    edit(copy, "otel/dynatrace-secret.yaml", lambda docs: docs[0]["stringData"].update(
        endpoint="http://otelgate-sink.otelgate.svc.cluster.local:4318/api/v2/otlp"))
    only(lint_manifests(copy), "dynatrace-secret.yaml", "endpoint port 4318 is not a port of Service otelgate-sink")


def test_literal_token_in_a_secret_template(copy: Path) -> None:
    edit(copy, "otel/dynatrace-secret.yaml", lambda docs: docs[0]["stringData"].update(
        **{"api-token": "dt0c01.REALLOOKINGTOKEN"}))
    text = lines(lint_manifests(copy))
    assert text and all("literal" in t and "dt0c01.REALLOOKINGTOKEN" not in t for t in text), text


def test_collector_service_account_without_rbac(copy: Path) -> None:
    edit(copy, "otel/collector.yaml",
         lambda docs: doc_of(docs, "OpenTelemetryCollector")["spec"].update(serviceAccount="someone-else"))
    text = lines(lint_manifests(copy))
    assert any("'someone-else' has no ServiceAccount" in t for t in text), text
    assert any("bound to no role granting get/list/watch on pods" in t for t in text), text


def test_undefined_pipeline_component(copy: Path) -> None:
    edit(copy, "otel/collector.yaml", lambda docs: doc_of(docs, "OpenTelemetryCollector")["spec"]["config"][
        "service"]["pipelines"]["logs"]["processors"].append("transform/missing"))
    only(lint_manifests(copy), "pipeline logs uses processor 'transform/missing'")


def test_go_injection_without_target_exe(copy: Path) -> None:
    def change(docs: list[dict[str, Any]]) -> None:
        annotations = doc_of(docs, "Deployment", "membership")["spec"]["template"]["metadata"]["annotations"]
        del annotations["instrumentation.opentelemetry.io/otel-go-auto-target-exe"]
    edit(copy, "app/simple-demo.yaml", change)
    only(lint_manifests(copy), "Deployment/membership", "otel-go-auto-target-exe")


def test_injection_naming_a_missing_instrumentation(copy: Path) -> None:
    edit(copy, "otel/instrumentation.yaml", lambda docs: docs[0]["metadata"].update(name="renamed"))
    text = lines(lint_manifests(copy))
    assert len(text) == 5 and all("names no Instrumentation" in t for t in text), text  # one per injected app


def test_unpinned_image(copy: Path) -> None:
    edit(copy, "app/simple-demo.yaml", lambda docs: container(docs, "coupon").update(
        image="ghcr.io/odigos-io/simple-demo/odigos-demo-coupon:latest"))
    only(lint_manifests(copy), "Deployment/coupon", ":latest")


def test_kong_nodeport_without_kind_mapping(copy: Path) -> None:
    edit(copy, "kong/values.yaml", lambda docs: docs[0]["proxy"]["http"].update(nodePort=30090))
    only(lint_manifests(copy), "proxy.http.nodePort 30090 has no extraPortMappings")


def test_kubernetes_schema_violation(copy: Path) -> None:
    edit(copy, "sink/service.yaml", lambda docs: docs[0]["spec"]["ports"][0].update(port="eighty"))
    text = lines(lint_manifests(copy))
    assert any("Service/otelgate-sink: spec.ports.0.port: 'eighty' is not of type 'integer'" in t for t in text), text


def test_unknown_field_is_a_schema_error(copy: Path) -> None:
    edit(copy, "sink/deployment.yaml", lambda docs: docs[0]["spec"]["template"]["spec"].update(restartPolice="x"))
    only(lint_manifests(copy), "Deployment/otelgate-sink", "restartPolice")


def test_yaml_that_does_not_parse(copy: Path) -> None:
    (copy / "app" / "broken.yaml").write_text("kind: Service\nmetadata: {name: [unclosed\n")
    only(lint_manifests(copy), "manifests/app/broken.yaml", "does not parse as YAML")


def test_cli_exit_codes(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert otelgate_main(["lint", str(MANIFESTS)]) == 0
    assert "0 finding(s)" in capsys.readouterr().out
    edit(copy, "kong/kong.yaml", lambda docs: plugin(docs, "tcp-log").update(port=1))
    assert otelgate_main(["lint", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "tcp-log port 1 != the collector's tcp_log receiver port 54525" in out and "1 finding(s)" in out


# --- the collector resource's config passes `<collector> validate` ---------------------------------------------------


def _collector_required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("OTELGATE_REQUIRE_COLLECTOR") == "1"


@pytest.fixture(scope="module")
def collector_binary() -> Path:
    from otelgate.collector import CollectorNotFound, find_collector

    try:
        return find_collector()
    except CollectorNotFound as exc:
        if _collector_required():
            pytest.fail(f"the collector is required here (CI / OTELGATE_REQUIRE_COLLECTOR=1): {exc}")
        pytest.skip(f"no collector binary: {exc}")


VALIDATE_ENV = {"DT_ENDPOINT": "http://otelgate-sink.otelgate.svc.cluster.local:8080/api/v2/otlp",
                "DT_API_TOKEN": "dummy-token-for-validate", "KONG_DEPLOYMENT_NAME": "kong-kind"}


def test_collector_resource_config_passes_collector_validate(collector_binary: Path) -> None:
    from otelgate.collector import load_collector_resource, resource_config, validate

    config = resource_config(load_collector_resource(MANIFESTS / "otel" / "collector.yaml"))
    result = validate(collector_binary, config, env=VALIDATE_ENV)
    assert result.returncode == 0, f"`{collector_binary.name} validate` rejected the CR's config:\n{result.stderr}"


def test_collector_validate_rejects_a_broken_config(collector_binary: Path) -> None:
    # proves the check above can fail: the same config with a pipeline naming an undefined exporter
    from otelgate.collector import load_collector_resource, resource_config, validate

    config = resource_config(load_collector_resource(MANIFESTS / "otel" / "collector.yaml"))
    config["service"]["pipelines"]["traces"]["exporters"].append("otlp_http/nowhere")
    result = validate(collector_binary, config, env=VALIDATE_ENV)
    assert result.returncode != 0 and "otlp_http/nowhere" in result.stderr


# --- collector listeners sharing a port; each injected language's effective protocol and logs exporter ----------------


def _collector_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = doc_of(docs, "OpenTelemetryCollector")["spec"]["config"]
    return config


def _instrumentation(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = doc_of(docs, "Instrumentation")["spec"]
    return spec


def _drop_env(spec: dict[str, Any], language: str, name: str) -> None:
    spec[language]["env"] = [e for e in spec[language]["env"] if e["name"] != name]


def _set_env(spec: dict[str, Any], language: str | None, name: str, value: str) -> None:
    env = spec.setdefault("env", []) if language is None else spec[language].setdefault("env", [])
    env[:] = [e for e in env if e["name"] != name] + [{"name": name, "value": value}]


def test_otlp_grpc_moved_onto_the_http_port(copy: Path) -> None:
    def change(docs: list[dict[str, Any]]) -> None:
        _collector_config(docs)["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = "0.0.0.0:4318"

    edit(copy, "otel/collector.yaml", change)
    only(lint_manifests(copy), "receiver otlp grpc (0.0.0.0:4318)", "receiver otlp http (0.0.0.0:4318)",
         "same port 4318", "cannot bind both")


def test_extension_on_a_receiver_port(copy: Path) -> None:
    def change(docs: list[dict[str, Any]]) -> None:
        _collector_config(docs)["extensions"]["health_check"]["endpoint"] = "0.0.0.0:54525"

    edit(copy, "otel/collector.yaml", change)
    only(lint_manifests(copy), "receiver tcp_log (0.0.0.0:54525)", "extension health_check (0.0.0.0:54525)")


def test_listeners_unused_or_on_distinct_hosts_do_not_clash() -> None:
    from otelgate.lint.exporting import _overlap, listeners

    config = {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"}}},
                            "otlp/unused": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"}}}},
              "extensions": {"health_check": {"endpoint": "0.0.0.0:4317"}},  # defined, not enabled by service
              "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}}
    assert list(listeners(config)) == [("receiver otlp grpc", "0.0.0.0:4317")]
    assert not _overlap("127.0.0.1:4317", "10.0.0.1:4317")
    assert _overlap("127.0.0.1:4317", "0.0.0.0:4317") and _overlap(":4317", "10.0.0.1:4317")


def test_listener_clash_is_what_the_real_collector_refuses(collector_binary: Path, tmp_path: Path) -> None:
    # the rule's oracle: the collector itself, given two listeners on one free port, exits with the bind error
    import socket
    import subprocess

    from otelgate.lint.exporting import listeners

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"},
                                                   "http": {"endpoint": f"127.0.0.1:{port}"}}}},
              "exporters": {"debug": {}},
              "service": {"telemetry": {"metrics": {"level": "none"}},
                          "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}}
    assert [a for _, a in listeners(config)] == [f"127.0.0.1:{port}"] * 2
    path = tmp_path / "clash.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([str(collector_binary), "--config", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0, f"the collector started with two listeners on port {port}:\n{result.stderr}"
    assert "address already in use" in result.stderr, result.stderr[-2000:]


def test_language_exporting_grpc_to_the_http_port(copy: Path) -> None:
    edit(copy, "otel/instrumentation.yaml",
         lambda docs: _set_env(_instrumentation(docs), "nodejs", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))
    only(lint_manifests(copy), "Instrumentation/otelgate nodejs (injected into Deployment/coupon)",
         "OTEL_EXPORTER_OTLP_PROTOCOL is grpc (spec.nodejs.env)", "port 4318", "otlp http receiver")


def test_spec_env_protocol_applies_where_the_language_sets_none(copy: Path) -> None:
    def change(docs: list[dict[str, Any]]) -> None:
        spec = _instrumentation(docs)
        _set_env(spec, None, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")  # every language but python overrides it
        _drop_env(spec, "python", "OTEL_EXPORTER_OTLP_PROTOCOL")

    edit(copy, "otel/instrumentation.yaml", change)
    only(lint_manifests(copy), "python (injected into Deployment/inventory)", "is grpc (spec.env)")


def test_java_protocol_left_to_the_agent_default(copy: Path) -> None:
    # the Operator 0.148.0 injects Java agent 1.33.6, whose OTLP default is still grpc (2.0.0 changed it)
    edit(copy, "otel/instrumentation.yaml",
         lambda docs: _drop_env(_instrumentation(docs), "java", "OTEL_EXPORTER_OTLP_PROTOCOL"))
    only(lint_manifests(copy), "java (injected into Deployment/frontend)", "is grpc (default of the Java agent 1.33.6",
         "releases/tag/v2.0.0")


def test_java_agent_2_image_defaults_to_http(copy: Path) -> None:
    def change(docs: list[dict[str, Any]]) -> None:
        spec = _instrumentation(docs)
        _drop_env(spec, "java", "OTEL_EXPORTER_OTLP_PROTOCOL")
        _drop_env(spec, "java", "OTEL_LOGS_EXPORTER")
        spec["java"]["image"] = "ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-java:2.22.0"

    edit(copy, "otel/instrumentation.yaml", change)
    assert lines(lint_manifests(copy)) == []


def test_java_logs_exporter_left_to_the_agent_default(copy: Path) -> None:
    edit(copy, "otel/instrumentation.yaml",
         lambda docs: _drop_env(_instrumentation(docs), "java", "OTEL_LOGS_EXPORTER"))
    only(lint_manifests(copy), "java (injected into Deployment/frontend)",
         "OTEL_LOGS_EXPORTER is unset and defaults to none", "logs pipeline receives OTLP")


def test_logs_exporter_switched_off_on_purpose_is_accepted(copy: Path) -> None:
    edit(copy, "otel/instrumentation.yaml",
         lambda docs: _set_env(_instrumentation(docs), "java", "OTEL_LOGS_EXPORTER", "none"))
    assert lines(lint_manifests(copy)) == []


@pytest.mark.parametrize("language, name", [
    ("python", "OTEL_EXPORTER_OTLP_PROTOCOL"), ("python", "OTEL_LOGS_EXPORTER"),
    ("nodejs", "OTEL_EXPORTER_OTLP_PROTOCOL"), ("nodejs", "OTEL_LOGS_EXPORTER"),
    ("dotnet", "OTEL_EXPORTER_OTLP_PROTOCOL"), ("go", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ("go", "OTEL_EXPORTER_OTLP_ENDPOINT")])
def test_entries_equal_to_the_default_may_go(copy: Path, language: str, name: str) -> None:
    # the Operator or the SDK supplies the same value (otelgate.lint.exporting.LANGUAGES; Go's endpoint comes from
    # spec.exporter.endpoint): lint has nothing to say, and manifests/mutation-equivalents.toml lists these drops
    edit(copy, "otel/instrumentation.yaml", lambda docs: _drop_env(_instrumentation(docs), language, name))
    assert lines(lint_manifests(copy)) == []


def test_only_languages_some_app_injects_are_checked(copy: Path) -> None:
    edit(copy, "otel/instrumentation.yaml",
         lambda docs: _set_env(_instrumentation(docs), "java", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))

    def no_java(docs: list[dict[str, Any]]) -> None:
        annotations = doc_of(docs, "Deployment", "frontend")["spec"]["template"]["metadata"]["annotations"]
        del annotations["instrumentation.opentelemetry.io/inject-java"]

    edit(copy, "app/simple-demo.yaml", no_java)
    assert lines(lint_manifests(copy)) == []


@pytest.mark.parametrize("sampler, share", [({"type": "parentbased_always_off"}, "records 0% of root spans"),
                                            ({"type": "parentbased_traceidratio", "argument": "0.5"},
                                             "parentbased_traceidratio 0.5 records 50% of root spans")])
def test_sampler_dropping_roots_of_apps_kong_does_not_front(copy: Path, sampler: dict[str, str], share: str) -> None:
    # the frontend (Java) receives GET /products from its callers, not through Kong: its root decides, Kong follows
    edit(copy, "otel/instrumentation.yaml", lambda docs: _instrumentation(docs).update(sampler=sampler))
    only(lint_manifests(copy), share, "Deployment/frontend, Deployment/membership receive requests that do not pass "
                                      "Kong", "kong/pdk/tracing.lua:614-617")


def test_sampler_dropping_roots_is_accepted_when_kong_fronts_every_injected_app(copy: Path) -> None:
    edit(copy, "otel/instrumentation.yaml",
         lambda docs: _instrumentation(docs).update(sampler={"type": "parentbased_always_off"}))

    def only_kong_upstreams(docs: list[dict[str, Any]]) -> None:
        for name in ("frontend", "membership"):
            annotations = doc_of(docs, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
            for key in [k for k in annotations if k.startswith("instrumentation.opentelemetry.io/inject-")]:
                del annotations[key]

    edit(copy, "app/simple-demo.yaml", only_kong_upstreams)
    assert lines(lint_manifests(copy)) == []


# --- every source of telemetry reaches the Dynatrace exporter through a pipeline of its signal ------------------------


def _pipeline(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    pipeline: dict[str, Any] = _collector_config(docs)["service"]["pipelines"][name]
    return pipeline


def test_dynatrace_exporter_removed_from_the_logs_pipeline(copy: Path) -> None:
    edit(copy, "otel/collector.yaml",
         lambda docs: _pipeline(docs, "logs")["exporters"].remove("otlp_http/dynatrace"))
    found = lines(lint_manifests(copy))
    assert len(found) == 2, found  # Kong's access logs and the services' OTLP logs
    assert "Kong's access logs (tcp-log plugin) never reach Dynatrace: its logs pipelines ['logs'] export only to " \
           "['debug'], none to ['otlp_http/dynatrace']" in found[0]
    assert found[1].count("the services' OTLP logs (Instrumentation/otelgate; ") == 1
    assert "java: Deployment/frontend" in found[1]


@pytest.mark.parametrize("switch", ["true", "false"])
def test_python_logs_need_the_logging_switch(copy: Path, switch: str) -> None:
    # the Python SDK attaches its log handler only with OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true
    from otelgate.lint.datapath import sources
    from otelgate.lint.model import collector_facts, load

    edit(copy, "otel/instrumentation.yaml", lambda docs: _set_env(
        _instrumentation(docs), "python", "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED", switch))
    m = load(copy)
    facts = collector_facts(m)
    assert facts is not None
    logs = [what for what, _, signal in sources(m, facts, m.file_doc("kong/kong.yaml")) if signal == "logs"
            and what.startswith("the services'")]
    assert len(logs) == 1 and ("python: Deployment/inventory" in logs[0]) == (switch == "true"), logs


def test_tcp_log_receiver_in_no_pipeline(copy: Path) -> None:
    # an unused receiver does not even listen: Kong's tcp-log connection is refused
    edit(copy, "otel/collector.yaml", lambda docs: _pipeline(docs, "logs")["receivers"].remove("tcp_log"))
    only(lint_manifests(copy), "Kong's access logs (tcp-log plugin) never reach Dynatrace: no logs pipeline "
                               "receives from tcp_log")


def test_services_metrics_without_a_pipeline(copy: Path) -> None:
    edit(copy, "otel/collector.yaml", lambda docs: _pipeline(docs, "metrics")["receivers"].remove("otlp"))
    text = only(lint_manifests(copy), "the services' OTLP metrics", "python: Deployment/inventory",
                "dotnet: Deployment/pricing")
    # Node's SDK 0.57 exports no metrics unless OTEL_METRICS_EXPORTER is set; the Go agent exports traces only
    assert "nodejs" not in text and "go:" not in text


def test_no_exporter_to_dynatrace(copy: Path) -> None:
    def change(docs: list[dict[str, Any]]) -> None:
        _collector_config(docs)["exporters"]["otlp_http/dynatrace"]["endpoint"] = "http://elsewhere:4318"

    edit(copy, "otel/collector.yaml", change)
    only(lint_manifests(copy), "no exporter sends to ${env:DT_ENDPOINT}: nothing reaches Dynatrace")


# --- the tcp_log receiver's operators read fields Kong's log line has -------------------------------------------------


def _tcp_log_operators(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    operators: list[dict[str, Any]] = _collector_config(docs)["receivers"]["tcp_log"]["operators"]
    return operators


def test_trace_parser_reading_a_field_kong_does_not_write(copy: Path) -> None:
    edit(copy, "otel/collector.yaml",
         lambda docs: _tcp_log_operators(docs)[1]["trace_id"].update(parse_from="attributes.traceid"))
    only(lint_manifests(copy), "receiver tcp_log operators[1] (trace_parser) trace_id.parse_from = "
                               "'attributes.traceid': Kong's log line has no field 'traceid'",
         "kong/pdk/log.lua:894-928")


def test_json_parser_not_reading_the_line(copy: Path) -> None:
    edit(copy, "otel/collector.yaml", lambda docs: _tcp_log_operators(docs)[0].update(parse_from="attributes.line"))
    only(lint_manifests(copy), "operators[0] (json_parser) parse_from = 'attributes.line': tcp_log puts each line "
                               "into body")


def test_parsers_after_a_missing_json_parser(copy: Path) -> None:
    edit(copy, "otel/collector.yaml", lambda docs: _tcp_log_operators(docs).pop(0))
    only(lint_manifests(copy), "operators[0] (trace_parser) trace_id.parse_from = 'attributes.trace_id'",
         "no parser has filled this field yet")


def test_a_custom_field_may_be_parsed(copy: Path) -> None:
    # custom_fields_by_lua keys are fields of the line too: a parser may read a new one
    edit(copy, "kong/kong.yaml", lambda docs: plugin(docs, "tcp-log")["custom_fields_by_lua"].update(
        span_id='return "0123456789abcdef"'))
    edit(copy, "otel/collector.yaml",
         lambda docs: _tcp_log_operators(docs)[1].update(span_id={"parse_from": "attributes.span_id"}))
    assert lines(lint_manifests(copy)) == []


@pytest.mark.parametrize("setting, fragment", [("retry_on_failure", "retry_on_failure is disabled"),
                                               ("sending_queue", "sending_queue is disabled")])
def test_dynatrace_exporter_without_retries_or_queue(copy: Path, setting: str, fragment: str) -> None:
    edit(copy, "otel/collector.yaml",
         lambda docs: _collector_config(docs)["exporters"]["otlp_http/dynatrace"][setting].update(enabled=False))
    only(lint_manifests(copy), f"exporter otlp_http/dynatrace: {fragment}", "429")


def test_json_parser_without_parse_ints(copy: Path) -> None:
    edit(copy, "otel/collector.yaml", lambda docs: _tcp_log_operators(docs)[0].update(parse_ints=False))
    only(lint_manifests(copy), "operators[0] (json_parser) parses Kong's log line without parse_ints: true",
         "as doubles")
