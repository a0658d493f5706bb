"""Each live control-plane check (otelgate/controlplane/checks.py) fails, with its stated reason, on a fault planted
through the real API server and Operator.

Every test applies a variant of manifests/otel/collector.yaml's resource under its own name in the same namespace
(its Secret and ServiceAccount exist there), first shows the check passing on it (the control), then plants the fault
and asserts what the check says. The variant and what the Operator made for it are deleted afterwards.

Two Operator behaviours plant the faults (opentelemetry-operator@v0.148.0):
- ``spec.managementState: unmanaged`` stops reconciliation: internal/controllers/opentelemetrycollector_controller.go
  :259 returns before anything is built, so later changes of the resource are not followed (a "Deployment that did
  not follow");
- a changed ``spec.config`` is rendered into a new ConfigMap and Service ports (internal/manifests/collector/
  configmap.go, service.go), i.e. what a faulty manifest would give on a cluster.
"""

from __future__ import annotations

from typing import Any

import pytest

from otelgate.controlplane import checks
from otelgate.controlplane.kube import Kube
from otelgate.controlplane.objects import Documents, one_of_kind
from otelgate.controlplane.testing import applied_collector, variant
from otelgate.waiting import poll_until

KIND = "OpenTelemetryCollector"
# After the Operator visibly handled the change (or, unmanaged, was told not to), a fault is stable: a short wait
# shows the check failing; the controls show the same checks passing within their longer wait.
FAULT_WAIT_S = 3.0
OTHER_IMAGE = "ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib:0.157.0"


@pytest.fixture
def manifest_cr(applied: object, documents: Documents) -> dict[str, Any]:
    return one_of_kind(documents, KIND)


def _patch(kube: Kube, cr: dict[str, Any], spec: dict[str, Any]) -> None:
    kube.merge_patch(cr["apiVersion"], KIND, cr["metadata"]["name"], cr["metadata"]["namespace"], {"spec": spec})


def _set(path: tuple[str, ...], value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        node = doc["spec"]["config"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def test_reconcile_check_names_a_deployment_that_did_not_follow(manifest_cr: dict[str, Any], kube: Kube) -> None:
    cr = variant(manifest_cr, "fault-reconcile", lambda _doc: None)
    with applied_collector(kube, cr):
        checks.check_reconciled(kube, cr)  # control
        _patch(kube, cr, {"managementState": "unmanaged", "image": OTHER_IMAGE, "networkPolicy": {"enabled": False}})
        with pytest.raises(checks.CheckFailed) as failed:
            checks.check_reconciled(kube, cr, timeout=FAULT_WAIT_S)
    said = str(failed.value)
    print(said)  # what the check said, in the test report (pytest -rP)
    assert f"the resource's spec.image {OTHER_IMAGE!r}" in said, said
    assert "spec.networkPolicy is not enabled, yet it owns NetworkPolicy" in said, said


def test_reconcile_check_passes_on_an_enabled_network_policy(manifest_cr: dict[str, Any], kube: Kube) -> None:
    """With spec.networkPolicy.enabled the Operator makes a NetworkPolicy selecting the collector's pods and
    admitting its container ports (internal/manifests/collector/networkpolicy.go:17-63 at v0.148.0), among them
    every port Kong's plugins and the Instrumentation send to."""
    cr = variant(manifest_cr, "np-enabled", lambda doc: doc["spec"].update(networkPolicy={"enabled": True}))
    with applied_collector(kube, cr):
        checks.check_reconciled(kube, cr)
        [policy] = checks.made_by_operator(kube, checks.stored(kube, cr), "networking.k8s.io/v1", "NetworkPolicy")
    allowed = {int(p["port"]) for rule in policy["spec"]["ingress"] for p in rule.get("ports") or []}
    assert {4317, 4318, 54525, 8889} <= allowed, allowed


def test_ports_check_names_the_port_its_clients_miss(manifest_cr: dict[str, Any], kube: Kube,
                                                     documents: Documents) -> None:
    """A collector whose OTLP/HTTP receiver listens on 4319: Kong's opentelemetry plugin and the Instrumentation
    still send to 4318, which the Operator's Service no longer exposes."""
    cr = variant(manifest_cr, "fault-ports", lambda _doc: None)
    name, namespace = manifest_cr["metadata"]["name"], manifest_cr["metadata"]["namespace"]
    refs = [r.retarget(f"{name}-collector", "fault-ports-collector", namespace)
            for r in checks.manifest_service_references(one_of_kind(documents, "Instrumentation"))]
    with applied_collector(kube, cr):
        checks.check_service_ports(kube, cr, refs)  # control: the same clients, pointed at the unchanged variant
        _patch(kube, cr, {"config": {"receivers": {"otlp": {"protocols": {"http": {"endpoint": "0.0.0.0:4319"}}}}}})
        stored = checks.stored(kube, cr)
        poll_until(lambda: {int(p["port"]) for s in checks.made_by_operator(kube, stored, "v1", "Service")
                            for p in s["spec"].get("ports") or []}, lambda ports: 4319 in ports,
                   what="the Operator to expose the receiver's new port 4319", timeout=60.0)
        with pytest.raises(checks.CheckFailed) as failed:
            checks.check_service_ports(kube, cr, refs, timeout=FAULT_WAIT_S)
    said = str(failed.value)
    print(said)  # what the check said, in the test report (pytest -rP)
    assert "kong plugin opentelemetry" in said and "fault-ports-collector.otelgate-observability:4318: no such port" \
        in said, said
    assert "Instrumentation otelgate spec.exporter.endpoint" in said, said
    assert ":54525" not in said and ":4317" not in said, f"only the moved port may be named: {said}"


def test_config_check_names_an_unlisted_difference(manifest_cr: dict[str, Any], kube: Kube) -> None:
    """The Operator renders a batch timeout of 1s where the local stack (derived from the manifest) runs 200ms:
    not a listed rewrite, so the check names the path and both values."""
    cr = variant(manifest_cr, "fault-config", lambda _doc: None)
    with applied_collector(kube, cr):
        checks.check_rendered_config(kube, cr, manifest_cr["spec"]["config"])  # control
        _patch(kube, cr, {"config": {"processors": {"batch": {"timeout": "1s"}}}})
        said = _config_check_once_rendered(kube, cr, manifest_cr, ("processors", "batch", "timeout"), "1s")
    assert "processors.batch.timeout: the Operator renders '1s', the local stack runs '200ms'" in said, said


def _config_check_once_rendered(kube: Kube, cr: dict[str, Any], manifest_cr: dict[str, Any],
                                path: tuple[str, ...], rendered: object) -> str:
    """What the config check says once the Operator has rendered ``rendered`` at ``path`` (printed for the report)."""
    poll_until(lambda: checks.lookup(checks.rendered_config(kube, cr), path), rendered.__eq__,
               what=f"the Operator to render {'.'.join(path)} = {rendered!r}", timeout=60.0,
               retry_on=(checks.CheckFailed,))
    with pytest.raises(checks.CheckFailed) as failed:
        checks.check_rendered_config(kube, cr, manifest_cr["spec"]["config"], timeout=FAULT_WAIT_S)
    said = str(failed.value)
    print(said)  # what the check said, in the test report (pytest -rP)
    return said


def test_config_check_names_a_component_only_one_side_has(manifest_cr: dict[str, Any], kube: Kube) -> None:
    """An extra processor in the resource (not in the manifest the local stack runs) is named, with 'nothing' on the
    local side."""
    cr = variant(manifest_cr, "fault-config-extra", _set(("processors", "batch/extra"), {"timeout": "1s"}))
    with applied_collector(kube, cr):
        said = _config_check_once_rendered(kube, cr, manifest_cr, ("processors", "batch/extra"), {"timeout": "1s"})
    assert "processors.batch/extra: the Operator renders {'timeout': '1s'}, the local stack runs nothing" in said, said


def test_scale_check_names_a_deployment_that_did_not_follow(manifest_cr: dict[str, Any], kube: Kube) -> None:
    cr = variant(manifest_cr, "fault-scale", lambda _doc: None)
    with applied_collector(kube, cr):
        checks.check_reconciled(kube, cr)
        checks.check_scaled(kube, cr, 0)  # control: managed, the Deployment follows both ways
        checks.check_scaled(kube, cr, 1)
        _patch(kube, cr, {"managementState": "unmanaged"})
        with pytest.raises(checks.CheckFailed) as failed:
            checks.check_scaled(kube, cr, 0, timeout=FAULT_WAIT_S)
    said = str(failed.value)
    print(said)  # what the check said, in the test report (pytest -rP)
    assert "Deployment fault-scale-collector spec.replicas stayed 1 (the resource was scaled to 0)" in said, said
