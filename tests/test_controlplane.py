"""The real API server and the real Operator (v0.148.0, the version the cluster stacks deploy) judge the manifests.

Started once per session by tests/conftest.py (etcd + kube-apiserver v1.34.3 + the Operator, built from the Go module
proxy; see otelgate/controlplane). No kubelet: objects are admitted, defaulted, mutated and reconciled for real, nothing
runs. The judging logic of the reconcile, ports, rendered-config and scale checks is otelgate/controlplane/checks.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from otelgate.controlplane import checks, crds, crdschema, injection
from otelgate.controlplane.kube import Kube, KubeApiError
from otelgate.controlplane.objects import (
    Documents,
    admitted_pod,
    app_deployments,
    inject_language,
    key_of,
    one_of_kind,
    python_deployment,
)

COLLECTOR_FILE = "manifests/otel/collector.yaml"
INSTRUMENTATION_FILE = "manifests/otel/instrumentation.yaml"


def _one(documents: Documents, kind: str) -> dict[str, Any]:
    return one_of_kind(documents, kind)


# ------------------------------------------------------------------------------------------------ acceptance
def test_every_manifest_applied_without_helm_is_accepted(applied: dict[tuple[str, str, str], dict[str, Any]],
                                                         documents: Documents,
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
                                                          documents: Documents) -> None:
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
                                                            documents: Documents) -> None:
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
# The judging logic is otelgate/controlplane/checks.py; tests/test_controlplane_faults.py plants a fault for each.
def _collector(kube: Kube, documents: Documents) -> dict[str, Any]:
    return checks.stored(kube, _one(documents, "OpenTelemetryCollector"))


def test_operator_reconciles_the_collector(applied: object, kube: Kube, documents: Documents) -> None:
    """Deployment (image, service account, env), ConfigMap, the three Services, and the NetworkPolicy the resource
    enables (selecting the collector's pods, admitting every container port)."""
    cr = _collector(kube, documents)
    assert (cr["spec"].get("networkPolicy") or {}).get("enabled") is True, \
        "manifests/otel/collector.yaml no longer enables spec.networkPolicy"
    checks.check_reconciled(kube, cr)


def test_collector_service_exposes_every_port_its_clients_use(applied: object, kube: Kube,
                                                              documents: Documents) -> None:
    """Kong's plugins (opentelemetry endpoints, tcp-log host/port), the Instrumentation's exporter endpoint and the
    prometheus exporter's port (what a scrape config points at) are each a port of the Operator's Services."""
    cr = _collector(kube, documents)
    refs = [r for r in checks.manifest_service_references(_one(documents, "Instrumentation"))
            if r.service.startswith(cr["metadata"]["name"])]
    assert len(refs) >= 3, f"expected Kong's two plugins and the Instrumentation to point at the collector: {refs}"
    checks.check_service_ports(kube, cr, refs)


def test_rendered_collector_config_is_the_local_config_up_to_the_listed_rewrites(
        applied: object, kube: Kube, documents: Documents) -> None:
    """What the Operator writes into the collector's ConfigMap is what the local stack runs, except at
    otelgate.collector.config.REWRITES and checks.OPERATOR_DEFAULTS (any other difference fails)."""
    cr = _collector(kube, documents)
    checks.check_rendered_config(kube, cr, _one(documents, "OpenTelemetryCollector")["spec"]["config"])


def test_scaling_the_collector_cr_to_zero_scales_its_deployment(applied: object, kube: Kube,
                                                                documents: Documents) -> None:
    """The collector-stop control of the kind/external stacks: the CR's scale subresource, which the Operator
    follows in its Deployment (no controller-manager here, so the Deployment's spec is what is checked, not pods)."""
    cr = _collector(kube, documents)
    before = int(cr["spec"].get("replicas") or 1)
    try:
        checks.check_scaled(kube, cr, 0)
        checks.check_scaled(kube, cr, before)
    finally:
        kube.scale(cr["apiVersion"], "OpenTelemetryCollector", cr["metadata"]["name"], cr["metadata"]["namespace"],
                   before)


# ------------------------------------------------------------------------------------------------ injection
def test_pod_webhook_injects_every_instrumented_app_template(applied: object, kube: Kube,
                                                             documents: Documents) -> None:
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
        applied: object, kube: Kube, documents: Documents) -> None:
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
