"""Manifest mutants that the real Operator v0.148.0 makes equivalent on a cluster (evidence for otelgate mutate's
equivalents, manifests/mutation-equivalents.toml). Each test applies the mutant beside the original (another name) and
compares what the Operator renders for both; citations are opentelemetry-operator@v0.148.0 path:line.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from otelgate.controlplane import checks
from otelgate.controlplane.kube import Kube
from otelgate.controlplane.objects import Documents, admitted_pod, app_deployments, inject_language, one_of_kind
from otelgate.controlplane.testing import applied_collector, applied_object, variant
from otelgate.waiting import poll_until

GO_SIDECAR = "opentelemetry-auto-instrumentation"  # sideCarName, internal/instrumentation/sdk.go:37 at v0.148.0


def _env(container: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value or the valueFrom as text) in order."""
    return [(e["name"], str(e["value"]) if "value" in e else repr(e.get("valueFrom"))) for e in container.get("env")
            or []]


def _without_env(section: str, name: str) -> Any:
    def change(doc: dict[str, Any]) -> None:
        env = doc["spec"][section]["env"]
        assert any(e["name"] == name for e in env), f"spec.{section}.env has no {name} to drop"
        doc["spec"][section]["env"] = [e for e in env if e["name"] != name]
    return change


def _deployment(documents: Documents, language: str) -> dict[str, Any]:
    [found] = [d for d in app_deployments(documents) if inject_language(d) == language]
    return found


def _injected_pod(kube: Kube, deployment: dict[str, Any], language: str, instrumentation: str,
                  container: str) -> dict[str, Any]:
    """The admitted pod of ``deployment`` whose inject annotation names ``instrumentation``; waits until the
    Operator's pod webhook (its cache of Instrumentations) injected ``container``'s instrumentation."""
    changed = copy.deepcopy(deployment)
    changed["spec"]["template"]["metadata"]["annotations"][f"instrumentation.opentelemetry.io/inject-{language}"] = \
        instrumentation

    def injected(pod: dict[str, Any]) -> bool:
        names = [c["name"] for c in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]]
        return any(n.startswith("opentelemetry-auto-instrumentation") for n in names) and container in names

    return poll_until(lambda: admitted_pod(kube, changed), injected, timeout=30.0,
                      what=f"the pod webhook to inject {language} from Instrumentation {instrumentation}")


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in pod["spec"]["containers"] if c["name"] == name]
    return dict(found)


@pytest.mark.parametrize("dropped", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_LOGS_EXPORTER"])
def test_python_env_without_a_spec_variable_that_the_operator_defaults(dropped: str, applied: object, kube: Kube,
                                                                         documents: Documents) -> None:
    """Dropping OTEL_EXPORTER_OTLP_PROTOCOL or OTEL_LOGS_EXPORTER from spec.python.env injects the same variables
    with the same values: the Operator appends spec.python.env first (internal/instrumentation/python.go:56-57,
    appendIfNotSet sdk.go:812-824), then its Python defaults where unset — OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf,
    OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER and OTEL_LOGS_EXPORTER=otlp (python.go:117-139, applied by
    injectDefaultPythonEnvVars sdk.go:138-139,398-401).

    What differs is the ORDER: a defaulted variable comes after the common variables instead of with the spec's
    (measured below). No value refers to it with $(...), so the container sees the same environment."""
    deployment = _deployment(documents, "python")
    app = deployment["spec"]["template"]["spec"]["containers"][0]["name"]
    instrumentation = one_of_kind(documents, "Instrumentation")
    original = _env(_container(_injected_pod(kube, deployment, "python", instrumentation["metadata"]["name"], app),
                               app))
    mutant = variant(instrumentation, f"mutant-python-{dropped.lower().replace('_', '-')}",
                     _without_env("python", dropped))
    with applied_object(kube, mutant):
        mutated = _env(_container(_injected_pod(kube, deployment, "python", mutant["metadata"]["name"], app), app))
    assert dict(mutated) == dict(original), f"the injected env differs:\noriginal {original}\nmutant   {mutated}"
    assert len(mutated) == len(original), (original, mutated)
    others = [item for item in original if item[0] != dropped]
    assert [item for item in mutated if item[0] != dropped] == others, "variables other than the dropped one moved"
    names = [name for name, _ in mutated]
    assert names.index(dropped) > names.index("PYTHONPATH"), f"{dropped} is no longer appended as a default: {names}"
    assert not [name for name, value in mutated if f"$({dropped})" in value], mutated


def test_go_endpoint_without_spec_go_env_comes_from_the_exporter(applied: object, kube: Kube,
                                                                 documents: Documents) -> None:
    """Dropping OTEL_EXPORTER_OTLP_ENDPOINT from spec.go.env injects the same endpoint into the Go agent sidecar:
    the sidecar gets spec.go.env (internal/instrumentation/golang.go:72-74), then injectCommonSDKConfig
    (sdk.go:196-197) sets OTEL_EXPORTER_OTLP_ENDPOINT from spec.exporter.endpoint where unset
    (exporter.go:17-23, called at sdk.go:426) — the manifest's two values are the same URL."""
    deployment = _deployment(documents, "go")
    instrumentation = one_of_kind(documents, "Instrumentation")
    assert instrumentation["spec"]["exporter"]["endpoint"] in {
        e.get("value") for e in instrumentation["spec"]["go"]["env"] if e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"}
    original = _env(_container(_injected_pod(kube, deployment, "go", instrumentation["metadata"]["name"],
                                             GO_SIDECAR), GO_SIDECAR))
    mutant = variant(instrumentation, "mutant-go-no-endpoint", _without_env("go", "OTEL_EXPORTER_OTLP_ENDPOINT"))
    with applied_object(kube, mutant):
        mutated = _env(_container(_injected_pod(kube, deployment, "go", mutant["metadata"]["name"], GO_SIDECAR),
                                  GO_SIDECAR))
    assert dict(mutated)["OTEL_EXPORTER_OTLP_ENDPOINT"] == instrumentation["spec"]["exporter"]["endpoint"], mutated
    assert dict(mutated) == dict(original), f"the injected env differs:\noriginal {original}\nmutant   {mutated}"


def _ports_by_service(kube: Kube, cr: dict[str, Any]) -> dict[str, set[int]]:
    name = cr["metadata"]["name"]
    return {s["metadata"]["name"].removeprefix(name): {int(p["port"]) for p in s["spec"].get("ports") or []}
            for s in checks.made_by_operator(kube, cr, "v1", "Service")}


def _probes(kube: Kube, cr: dict[str, Any]) -> dict[str, tuple[str, int]]:
    [deployment] = checks.made_by_operator(kube, cr, "apps/v1", "Deployment")
    container = checks.collector_container(deployment)
    return {kind: (str(container[kind]["httpGet"]["path"]), int(container[kind]["httpGet"]["port"]))
            for kind in ("livenessProbe", "readinessProbe", "startupProbe") if container.get(kind)}


def test_health_check_port_moves_the_probes_and_the_extension_service(applied: object, kube: Kube,
                                                                      documents: Documents) -> None:
    """extensions.health_check.endpoint 13133 -> 13134: the Operator derives the collector container's probes from
    the extension's endpoint (healthcheckv1.go:47-64, registered as liveness/readiness/startup generator in
    extensions/helpers.go:15-26; container.go:96-128, config.go:361-419) and the container and `-extension`
    Service ports from it (config.go:343-345 with container.go:135, service.go:100-131), so probes, ports and
    Service follow and the mutant is equivalent on a cluster. The clients' ports stay served (ports check)."""
    manifest_cr = one_of_kind(documents, "OpenTelemetryCollector")
    original = checks.stored(kube, manifest_cr)
    checks.check_reconciled(kube, original)
    original_probes, original_ports = _probes(kube, original), _ports_by_service(kube, original)
    assert original_probes and {port for _, port in original_probes.values()} == {13133}, original_probes
    mutant = variant(manifest_cr, "mutant-health-13134", lambda doc: doc["spec"]["config"]["extensions"][
        "health_check"].update(endpoint="0.0.0.0:13134"))
    name, namespace = manifest_cr["metadata"]["name"], manifest_cr["metadata"]["namespace"]
    refs = [r.retarget(f"{name}-collector", "mutant-health-13134-collector", namespace)
            for r in checks.manifest_service_references(one_of_kind(documents, "Instrumentation"))]
    with applied_collector(kube, mutant):
        checks.check_reconciled(kube, mutant)
        stored = checks.stored(kube, mutant)
        checks.check_service_ports(kube, stored, refs)
        mutant_probes, mutant_ports = _probes(kube, stored), _ports_by_service(kube, stored)
        [deployment] = checks.made_by_operator(kube, stored, "apps/v1", "Deployment")
        container_ports = {int(p["containerPort"]) for p in checks.collector_container(deployment)["ports"]}
    assert mutant_probes == {kind: (path, 13134) for kind, (path, _) in original_probes.items()}, mutant_probes
    moved = {suffix: {13134 if p == 13133 else p for p in ports} for suffix, ports in original_ports.items()}
    assert mutant_ports == moved, f"Services: original {original_ports}, mutant {mutant_ports}"
    assert 13134 in container_ports and 13133 not in container_ports, container_ports
