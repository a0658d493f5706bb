"""What the control-plane checks share: the session's control plane, the manifests otelgate applies without Helm,
and reading back what the Operator made. The checks themselves are in tests/test_controlplane.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from otelgate.controlplane import build
from otelgate.controlplane.cluster import ControlPlane, start
from otelgate.controlplane.kube import Kube, KubeApiError
from otelgate.procs import port_is_open
from otelgate.waiting import poll_until

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
NOT_APPLIED_GROUPS = ("kind.x-k8s.io/",)  # kind's cluster config is read by `kind create`, never applied
REQUIRE_ENV = "OTELGATE_REQUIRE_CONTROLPLANE"
# namespaced kinds first, the Operator's custom resources last (their webhooks need the rest in place)
_ORDER = {"Namespace": 0, "CustomResourceDefinition": 0, "ServiceAccount": 1, "Secret": 1, "ConfigMap": 1,
          "Role": 2, "ClusterRole": 2, "RoleBinding": 3, "ClusterRoleBinding": 3,
          "OpenTelemetryCollector": 9, "Instrumentation": 9}


def control_plane_or_skip(workdir: Path) -> Iterator[ControlPlane]:
    """Start the control plane for a test session; in CI (``OTELGATE_REQUIRE_CONTROLPLANE=1``) missing binaries
    fail instead of skipping. Teardown proves that no process and no port is left."""
    missing = [c.name for c in build.COMPONENTS if build.cached_binary(c) is None]
    if missing:
        message = (f"control-plane binaries not built: {', '.join(missing)}; build them with `nox -s controlplane` "
                   f"or `python -m otelgate.controlplane build` (about 8 minutes cold)")
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    plane = start(workdir, progress=lambda _line: None)
    try:
        yield plane
    finally:
        pids = [p.pid for p in plane.processes]
        plane.stop()
        left = [pid for pid in pids if _pid_alive(pid)]
        open_ports = [port for port in plane.ports if port_is_open("127.0.0.1", port)]
        assert not left and not open_ports, f"control plane left processes {left} / ports {open_ports}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


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


def wait_for(kube: Kube, api_version: str, kind: str, name: str, namespace: str, *, what: str,
             timeout: float = 60.0) -> dict[str, Any]:
    def observe() -> dict[str, Any]:
        try:
            return kube.get(api_version, kind, name, namespace)
        except KubeApiError as exc:
            if exc.code == 404:
                return {}
            raise

    return poll_until(observe, bool, what=what, timeout=timeout, retry_on=(httpx.HTTPError,))


def owned_by(kube: Kube, api_version: str, kind: str, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
    return [item for item in kube.list(api_version, kind, namespace)
            if any(ref.get("uid") == owner_uid for ref in (item.get("metadata") or {}).get("ownerReferences") or [])]
