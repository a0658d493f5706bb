"""The objects the control-plane checks work with: the manifests otelgate applies without Helm, applied in order, and
what a controller-manager would have made (each namespace's default ServiceAccount, a Deployment's ReplicaSet and
its pod as admitted by the API server, mutated by the Operator's pod webhook)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from otelgate import paths
from otelgate.controlplane.kube import Kube, KubeApiError

MANIFESTS = paths.manifests_dir()
NOT_APPLIED_GROUPS = ("kind.x-k8s.io/",)  # kind's cluster config is read by `kind create`, never applied
# namespaced kinds first, the Operator's custom resources last (their webhooks need the rest in place)
_ORDER = {"Namespace": 0, "CustomResourceDefinition": 0, "ServiceAccount": 1, "Secret": 1, "ConfigMap": 1,
          "Role": 2, "ClusterRole": 2, "RoleBinding": 3, "ClusterRoleBinding": 3,
          "OpenTelemetryCollector": 9, "Instrumentation": 9}
Documents = list[tuple[str, dict[str, Any]]]


def applied_documents(root: Path = MANIFESTS) -> list[tuple[str, dict[str, Any]]]:
    """(file, object) for every Kubernetes object in ``root``: what otelgate applies with kubectl (Helm values and
    decK's kong.yaml are not Kubernetes objects; kind's cluster config is not applied)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(root.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind")
                    and not str(doc["apiVersion"]).startswith(NOT_APPLIED_GROUPS)):
                found.append((path.relative_to(root.parent).as_posix(), doc))
    return sorted(found, key=lambda item: _ORDER.get(str(item[1]["kind"]), 5))


def namespaces_of(docs: list[tuple[str, dict[str, Any]]]) -> set[str]:
    return {str((d.get("metadata") or {}).get("namespace")) for _, d in docs
            if (d.get("metadata") or {}).get("namespace")}


def ensure_default_service_accounts(kube: Kube, namespaces: set[str]) -> None:
    """The controller-manager creates each namespace's ``default`` ServiceAccount; there is none here, and the
    ServiceAccount admission plugin refuses pods without it."""
    for namespace in sorted(namespaces):
        kube.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": namespace}})


def apply_all(kube: Kube, documents: Documents) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Server-side apply of every object, namespaces first; (kind, namespace, name) -> what the server stored."""
    stored: dict[tuple[str, str, str], dict[str, Any]] = {}
    for _file, doc in documents:
        if doc["kind"] == "Namespace":
            stored[key_of(doc)] = kube.apply(doc)
    ensure_default_service_accounts(kube, namespaces_of(documents))
    for file, doc in documents:
        if doc["kind"] != "Namespace":
            try:
                stored[key_of(doc)] = kube.apply(doc)
            except KubeApiError as exc:
                raise AssertionError(f"{file}: the API server refused {doc['kind']} "
                                     f"{doc['metadata'].get('name')}: {exc}") from exc
    return stored


def key_of(doc: dict[str, Any]) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return str(doc["kind"]), str(meta.get("namespace") or ""), str(meta["name"])


def admitted_pod(kube: Kube, deployment: dict[str, Any]) -> dict[str, Any]:
    """The pod a Deployment's ReplicaSet would create, as the API server admits it (dry run, so the Operator's pod
    webhook mutates it and nothing is stored). The ReplicaSet is real: the Operator reads the owner chain for
    the service name and the k8s.deployment.name resource attribute."""
    meta, template = deployment["metadata"], copy.deepcopy(deployment["spec"]["template"])
    stored = kube.get("apps/v1", "Deployment", meta["name"], meta["namespace"])
    replicaset = kube.apply({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": f"{meta['name']}-5d8f7c9b6", "namespace": meta["namespace"],
                     "labels": template["metadata"].get("labels") or {},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                          "uid": stored["metadata"]["uid"], "controller": True}]},
        "spec": {"replicas": 0, "selector": deployment["spec"]["selector"], "template": template}})
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {**template["metadata"], "name": f"{replicaset['metadata']['name']}-x7k2p",
                        "namespace": meta["namespace"],
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                             "name": replicaset["metadata"]["name"],
                                             "uid": replicaset["metadata"]["uid"], "controller": True}]},
           "spec": template["spec"]}
    return kube.create(pod, dry_run=True)


def owned_by(kube: Kube, api_version: str, kind: str, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
    return [item for item in kube.list(api_version, kind, namespace)
            if any(ref.get("uid") == owner_uid for ref in (item.get("metadata") or {}).get("ownerReferences") or [])]


INJECT_PREFIX = "instrumentation.opentelemetry.io/inject-"


def inject_language(deployment: dict[str, Any]) -> str | None:
    """The language of the pod template's ``instrumentation.opentelemetry.io/inject-<language>`` annotation."""
    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    found = [key.removeprefix(INJECT_PREFIX) for key in annotations if key.startswith(INJECT_PREFIX)]
    return found[0] if found else None


def app_deployments(documents: Documents) -> list[dict[str, Any]]:
    return [doc for file, doc in documents if file.startswith("manifests/app/") and doc["kind"] == "Deployment"]


def python_deployment(documents: Documents) -> dict[str, Any]:
    found = [d for d in app_deployments(documents) if inject_language(d) == "python"]
    if len(found) != 1:
        raise ValueError(f"expected one Python-instrumented Deployment in manifests/app, found {len(found)}")
    return found[0]



def one_of_kind(documents: Documents, kind: str) -> dict[str, Any]:
    """A copy of the one object of ``kind`` in the manifests (a ValueError when there is not exactly one)."""
    found = [doc for _, doc in documents if doc["kind"] == kind]
    if len(found) != 1:
        raise ValueError(f"expected one {kind} in manifests/, found {len(found)}")
    return copy.deepcopy(found[0])
