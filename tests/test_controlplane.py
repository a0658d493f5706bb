"""The real API server and the real Operator (v0.148.0, the version the cluster stacks deploy) judge the manifests.

Started once per session (etcd + kube-apiserver v1.34.3 + the Operator, built from the Go module proxy; see
otelgate/controlplane). No kubelet: objects are admitted, defaulted, mutated and reconciled for real, nothing runs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelgate.collector.config import CollectorPorts, derive_local_config, rewritten_by
from otelgate.configdiff import changes
from otelgate.controlplane import crds, crdschema, injection
from otelgate.controlplane.cluster import ControlPlane
from otelgate.controlplane.kube import Kube, KubeApiError
from otelgate.controlplane.objects import (
    Documents,
    admitted_pod,
    app_deployments,
    applied_documents,
    apply_all,
    inject_language,
    key_of,
    owned_by,
    python_deployment,
)
from otelgate.controlplane.testing import control_plane_or_skip
from otelgate.waiting import poll_until

COLLECTOR_FILE = "manifests/otel/collector.yaml"
INSTRUMENTATION_FILE = "manifests/otel/instrumentation.yaml"


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    yield from control_plane_or_skip(tmp_path_factory.mktemp("controlplane"))


@pytest.fixture(scope="session")
def kube(plane: ControlPlane) -> Kube:
    return plane.kube


@pytest.fixture(scope="session")
def documents() -> list[tuple[str, dict[str, Any]]]:
    return applied_documents()


@pytest.fixture(scope="session")
def applied(kube: Kube, documents: Documents) -> dict[tuple[str, str, str], dict[str, Any]]:
    return apply_all(kube, documents)


def _one(documents: list[tuple[str, dict[str, Any]]], kind: str) -> dict[str, Any]:
    found = [doc for _, doc in documents if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in manifests/, found {len(found)}"
    return copy.deepcopy(found[0])


# ------------------------------------------------------------------------------------------------ acceptance
def test_every_manifest_applied_without_helm_is_accepted(applied: dict[tuple[str, str, str], dict[str, Any]],
                                                         documents: list[tuple[str, dict[str, Any]]],
                                                         kube: Kube) -> None:
    assert {key_of(doc) for _, doc in documents} <= set(applied)
    kinds = {kind for kind, _, _ in applied}
    assert {"OpenTelemetryCollector", "Instrumentation", "Deployment", "Namespace"} <= kinds, kinds
    for (kind, namespace, name), stored in applied.items():
        assert stored.get("metadata", {}).get("uid"), f"{kind} {namespace}/{name} was not stored: {stored}"


FAULTS = {
    # fault id: (kind, mutate, what the server must say, offline finding or None when only the server can tell)
    "unknown field in the collector CR": (
        "OpenTelemetryCollector", lambda d: d["spec"].update(replica=2),
        ".spec.replica: field not declared in schema", 'unknown field "spec.replica"'),
    "wrong type in the Instrumentation": (
        "Instrumentation", lambda d: d["spec"]["sampler"].update(argument=0.5),
        "spec.sampler.argument", "spec.sampler.argument: expected string"),
    "collector config without pipelines": (
        "OpenTelemetryCollector", lambda d: d["spec"]["config"]["service"].update(pipelines=None),
        "spec.config.service.pipelines in body must be of type object", "spec.config.service.pipelines: null"),
}


def test_the_operator_does_not_judge_collector_components(applied: object, kube: Kube,
                                                          documents: list[tuple[str, dict[str, Any]]]) -> None:
    """Measured: Operator 0.148.0 admits a pipeline naming a receiver that is not defined (and unknown component
    types). The guards for that are otelgate lint (below) and `<collector> validate` (tests/test_manifests_lint.py)."""
    bad = _one(documents, "OpenTelemetryCollector")
    bad["spec"]["config"]["service"]["pipelines"]["traces"]["receivers"].append("nosuchreceiver")
    kube.apply(bad, dry_run=True)  # admitted: if a later Operator refuses it, move this fault into FAULTS
    from otelgate.lint.model import Doc, Manifests, collector_facts
    from otelgate.lint.resources import check_collector_resource

    m = Manifests(root=Path("manifests"), docs=[Doc(COLLECTOR_FILE, 0, bad)])
    facts = collector_facts(m)
    assert facts is not None
    check_collector_resource(m, facts)
    assert any("nosuchreceiver" in str(f) for f in m.findings), m.findings


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_planted_fault_is_rejected_with_the_servers_message(fault: str, applied: object, kube: Kube,
                                                            documents: list[tuple[str, dict[str, Any]]]) -> None:
    kind, mutate, server_says, offline_says = FAULTS[fault]
    good = _one(documents, kind)
    kube.apply(good, dry_run=True)  # the control: unfaulted, the same request passes
    bad = copy.deepcopy(good)
    mutate(bad)
    with pytest.raises(KubeApiError) as refused:
        kube.apply(bad, dry_run=True)
    assert server_says in refused.value.message, f"{fault}: the server said {refused.value.message!r}"
    offline = crdschema.validate(bad, crds.schema_for(crds.load_crds(), bad["apiVersion"], kind) or {})
    if offline_says is None:
        assert offline == [], f"the schema cannot see {fault}; only the Operator's webhook can: {offline}"
    else:
        assert any(offline_says in finding for finding in offline), (fault, offline, refused.value.message)


# ------------------------------------------------------------------------------------------------ reconcile
def _collector(kube: Kube, documents: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    cr = _one(documents, "OpenTelemetryCollector")
    return kube.get(cr["apiVersion"], "OpenTelemetryCollector", cr["metadata"]["name"], cr["metadata"]["namespace"])


def _made_by_operator(kube: Kube, cr: dict[str, Any], api_version: str, kind: str,
                      minimum: int = 1) -> list[dict[str, Any]]:
    namespace, uid = cr["metadata"]["namespace"], cr["metadata"]["uid"]
    return poll_until(lambda: owned_by(kube, api_version, kind, namespace, uid), lambda found: len(found) >= minimum,
                      what=f"the Operator to create {kind} owned by OpenTelemetryCollector {cr['metadata']['name']}",
                      timeout=90.0)


def test_operator_reconciles_the_collector(applied: object, kube: Kube,
                                           documents: list[tuple[str, dict[str, Any]]]) -> None:
    cr = _collector(kube, documents)
    deployment = _made_by_operator(kube, cr, "apps/v1", "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == cr["spec"]["image"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == cr["spec"]["serviceAccount"]
    env = {e["name"]: e for e in container.get("env") or []}
    for wanted in cr["spec"].get("env") or []:
        assert env.get(wanted["name"]) == wanted, f"env {wanted['name']}: {env.get(wanted['name'])}"
    assert _made_by_operator(kube, cr, "v1", "ConfigMap")
    names = {s["metadata"]["name"] for s in _made_by_operator(kube, cr, "v1", "Service", minimum=3)}
    name = cr["metadata"]["name"]
    assert {f"{name}-collector", f"{name}-collector-headless", f"{name}-collector-monitoring"} <= names, names


def _service_ports(kube: Kube, cr: dict[str, Any]) -> dict[str, set[int]]:
    services = _made_by_operator(kube, cr, "v1", "Service", minimum=3)
    return {s["metadata"]["name"]: {int(p["port"]) for p in s["spec"].get("ports") or []} for s in services}


_SVC_URL = re.compile(r"^(?:[a-z]+://)?([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)")


def _collector_references(documents: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str, str, int]]:
    """(where, service, namespace, port) of every reference to a Service in kong.yaml and the Instrumentation."""
    kong = yaml.safe_load((Path(__file__).resolve().parents[1] / "manifests" / "kong" / "kong.yaml").read_text())
    refs: list[tuple[str, str, str, int]] = []
    for plugin in kong.get("plugins") or []:
        config = plugin.get("config") or {}
        if "host" in config and "port" in config:
            host = str(config["host"]).split(".")
            refs.append((f"kong plugin {plugin['name']} host/port", host[0], host[1], int(config["port"])))
        refs += [(f"kong plugin {plugin['name']} {key}", *_parse(value)) for key, value in config.items()
                 if isinstance(value, str) and _SVC_URL.match(value)]
    instrumentation = _one(documents, "Instrumentation")

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")
        elif isinstance(node, str) and _SVC_URL.match(node):
            refs.append((f"Instrumentation {where}", *_parse(node)))

    walk(instrumentation["spec"], "spec")
    return refs


def _parse(value: str) -> tuple[str, str, int]:
    match = _SVC_URL.match(value)
    assert match is not None
    return match.group(1), match.group(2), int(match.group(3))


def test_collector_service_exposes_every_port_its_clients_use(applied: object, kube: Kube,
                                                              documents: list[tuple[str, dict[str, Any]]]) -> None:
    cr = _collector(kube, documents)
    ports = _service_ports(kube, cr)
    refs = [r for r in _collector_references(documents) if r[1].startswith(cr["metadata"]["name"])]
    assert len(refs) >= 3, f"expected Kong's two plugins and the Instrumentation to point at the collector: {refs}"
    wrong = [(where, f"{svc}.{ns}:{port}") for where, svc, ns, port in refs
             if ns != cr["metadata"]["namespace"] or port not in ports.get(svc, set())]
    assert wrong == [], f"references to no port of the Operator's Services {ports}: {wrong}"
    exporter = cr["spec"]["config"]["exporters"].get("prometheus") or {}
    prom_port = int(str(exporter.get("endpoint", ":0")).rsplit(":", 1)[1])
    assert prom_port in ports[f"{cr['metadata']['name']}-collector"], (prom_port, ports)


# What the Operator's defaulting webhook writes into spec.config, each equal to the component's own default, so the
# collector behaves the same with or without it: health_check's path "/" (opentelemetry-operator@v0.148.0
# internal/components/extensions/healthcheckv1.go:19,39; the extension's default path is "/" as well).
OPERATOR_DEFAULTS: dict[tuple[str | int, ...], Any] = {("extensions", "health_check", "path"): "/"}


def _at(config: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        config = config[key]
    return config


def test_rendered_collector_config_is_the_local_config_up_to_the_listed_rewrites(
        applied: object, kube: Kube, documents: list[tuple[str, dict[str, Any]]]) -> None:
    """What the Operator writes into the collector's ConfigMap is what the local stack runs, except at
    otelgate.collector.config.REWRITES (a change the Operator makes that is not a listed rewrite fails)."""
    cr = _collector(kube, documents)
    [configmap] = _made_by_operator(kube, cr, "v1", "ConfigMap")
    rendered = yaml.safe_load(configmap["data"]["collector.yaml"])
    local = derive_local_config(_one(documents, "OpenTelemetryCollector")["spec"]["config"],
                                ports=CollectorPorts.allocate(), sink_endpoint="http://127.0.0.1:1/api/v2/otlp",
                                kong_status_target="127.0.0.1:2")
    found = changes(rendered, local)
    assert found, "the local config equals the cluster's: the rewrites to loopback ports did not happen"
    for path, value in OPERATOR_DEFAULTS.items():
        assert _at(rendered, path) == value, f"the Operator no longer writes {path} = {value!r}"
    unexplained = [f"{c.dotted} -> {c.after!r}" for c in found
                   if rewritten_by(c.path) is None and c.path not in OPERATOR_DEFAULTS]
    assert unexplained == [], f"the Operator's rendering and the local config differ outside REWRITES: {unexplained}"


def test_scaling_the_collector_cr_to_zero_scales_its_deployment(applied: object, kube: Kube,
                                                                documents: list[tuple[str, dict[str, Any]]]) -> None:
    """The collector-stop control of the kind/external stacks: spec.replicas of the CR, which the Operator writes
    into its Deployment (no controller-manager here, so the Deployment's spec is what is checked, not pods)."""
    cr = _collector(kube, documents)
    name, namespace = cr["metadata"]["name"], cr["metadata"]["namespace"]
    before = int(cr["spec"].get("replicas") or 1)
    deployment = _made_by_operator(kube, cr, "apps/v1", "Deployment")[0]

    def replicas() -> int:
        return int(kube.get("apps/v1", "Deployment", deployment["metadata"]["name"], namespace)["spec"]["replicas"])

    try:
        for wanted in (0, before):
            kube.merge_patch(cr["apiVersion"], "OpenTelemetryCollector", name, namespace,
                             {"spec": {"replicas": wanted}})
            poll_until(replicas, wanted.__eq__, timeout=60.0,
                       what=f"Deployment {deployment['metadata']['name']} spec.replicas == {wanted}")
    finally:
        kube.merge_patch(cr["apiVersion"], "OpenTelemetryCollector", name, namespace, {"spec": {"replicas": before}})


# ------------------------------------------------------------------------------------------------ injection
def test_pod_webhook_injects_every_instrumented_app_template(applied: object, kube: Kube,
                                                             documents: list[tuple[str, dict[str, Any]]]) -> None:
    images = dict(re.findall(r"^autoinstrumentation-([a-z]+)=(\S+)$", crds.operator_file(crds.VERSIONS_FILE),
                             flags=re.MULTILINE))
    instrumentation = _one(documents, "Instrumentation")
    checked = []
    for deployment in app_deployments(documents):
        language = inject_language(deployment)
        if language is None:
            continue
        pod = admitted_pod(kube, deployment)
        added = [c for c in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
                 if c["name"].startswith("opentelemetry-auto-instrumentation")]
        assert added, f"{deployment['metadata']['name']} ({language}): the Operator injected nothing"
        explicit = (instrumentation["spec"].get(language) or {}).get("image")
        tag = explicit.rsplit(":", 1)[1] if explicit else images[language]
        assert any(c["image"].endswith(f":{tag}") for c in added), (language, [c["image"] for c in added])
        app = pod["spec"]["containers"][0]
        env = {e["name"] for e in app.get("env") or []} | {e["name"] for c in added for e in c.get("env") or []}
        assert {"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"} <= env, (language, sorted(env))
        checked.append(language)
    assert sorted(checked) == sorted({"python", "nodejs", "java", "dotnet", "go"}), checked


def test_python_injection_matches_the_checked_in_rendering_and_the_local_stack(
        applied: object, kube: Kube, documents: list[tuple[str, dict[str, Any]]]) -> None:
    """The Operator's env for the Python demo service (names and values: PYTHONPATH, exporter endpoint and protocol,
    propagators, sampler, resource attributes) is the checked-in copy the offline tests hold the local stack to;
    regenerate it with `python -m otelgate.controlplane render-injection` when the Operator or the manifests move."""
    deployment = python_deployment(documents)
    live = injection.rendered_env(admitted_pod(kube, deployment))
    copy_ = injection.load_rendering()
    assert copy_["operator"] == injection.OPERATOR_VERSION
    assert live == copy_["env"], ("the Operator's Python injection differs from otelgate/demoapp/"
                                  f"{injection.RENDERED_FILE.name}; regenerate it:\nlive: {live}\ncopy: {copy_['env']}")
    names = {item["name"] for item in live}
    assert {"PYTHONPATH", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_PROPAGATORS",
            "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_RESOURCE_ATTRIBUTES"} <= names, sorted(names)
