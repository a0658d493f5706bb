"""Where each part of the pipeline lives in a cluster: namespaces, Helm releases, chart pins, the manifest files and
the ownership label. Facts only (no commands): the kind/external stacks deploy by them and ``otelgate lint`` checks
the manifests against them, so the two can never disagree.

Every name otelgate creates in a cluster starts with ``otelgate`` and every object it creates carries
:data:`OWNER_LABEL`: on a shared cluster (``--stack external``) otelgate refuses to touch a release or namespace of
the same name that lacks the label, and removes only what carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from otelgate.controlplane.versions import OPERATOR_CHART_VERSION  # the Operator the control plane verifies

OWNER_LABEL_KEY = "otelgate.dev/owned-by"
OWNER_LABEL_VALUE = "otelgate"
OWNER_LABEL = f"{OWNER_LABEL_KEY}={OWNER_LABEL_VALUE}"
TOKEN_PLACEHOLDER = "__DT_API_TOKEN__"


@dataclass(frozen=True)
class Chart:
    """A pinned Helm chart, installed with ``--repo`` so no local ``helm repo add`` state is needed."""

    repo_url: str
    name: str
    version: str


@dataclass(frozen=True)
class Release:
    """A Helm release otelgate installs: its name, namespace and chart (a key of :attr:`Topology.charts`)."""

    addon: str
    name: str
    namespace: str
    chart: str


@dataclass(frozen=True)
class Topology:
    """Namespaces, releases and charts of the cluster stacks."""

    cert_manager: Release = Release("cert-manager", "otelgate-cert-manager", "otelgate-cert-manager", "cert-manager")
    operator: Release = Release("otel-operator", "otelgate-operator", "otelgate-operator", "otel-operator")
    # chart kong/kong: fullname <release>-kong (charts/kong/templates/_helpers.tpl@kong-3.4.1:19-21), so the proxy
    # Service is otelgate-kong-kong-proxy
    kong: Release = Release("kong", "otelgate-kong", "otelgate-kong", "kong")
    kong_chart_name: str = "kong"       # app.kubernetes.io/name on Kong's pods (chart name; values set no nameOverride)
    collector_namespace: str = "otelgate-observability"
    app_namespace: str = "otelgate-demo"   # kong.yaml's upstreams are <svc>.otelgate-demo.svc.cluster.local
    sink_namespace: str = "otelgate"
    sink_name: str = "otelgate-sink"
    charts: dict[str, Chart] = field(default_factory=lambda: {
        "cert-manager": Chart("https://charts.jetstack.io", "cert-manager", "v1.21.1"),
        "otel-operator": Chart("https://open-telemetry.github.io/opentelemetry-helm-charts",
                               "opentelemetry-operator", OPERATOR_CHART_VERSION),
        "kong": Chart("https://charts.konghq.com", "kong", "3.4.1"),
    })

    @property
    def kong_namespace(self) -> str:
        return self.kong.namespace

    @property
    def kong_release(self) -> str:
        return self.kong.name

    @property
    def kong_proxy_service(self) -> str:
        return f"{self.kong.name}-{self.kong_chart_name}-proxy"

    @property
    def releases(self) -> tuple[Release, ...]:
        return (self.cert_manager, self.operator, self.kong)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace otelgate creates (all carry the ownership label)."""
        return (self.sink_namespace, self.cert_manager.namespace, self.operator.namespace, self.collector_namespace,
                self.kong.namespace, self.app_namespace)

    def kong_pod_labels(self, values: dict[str, Any]) -> dict[str, str]:
        """The labels the Kong chart (3.4.x ``kong.selectorLabels`` + ``podLabels``) puts on Kong's pods."""
        labels = {
            "app.kubernetes.io/name": str(values.get("nameOverride") or self.kong_chart_name),
            "app.kubernetes.io/component": "app",
            "app.kubernetes.io/instance": self.kong.name,
        }
        labels.update({str(k): str(v) for k, v in (values.get("podLabels") or {}).items()})
        return labels


TOPOLOGY = Topology()


@dataclass(frozen=True)
class Paths:
    """The manifest files, relative to the manifests folder (:func:`otelgate.paths.manifests_dir`)."""

    kind_cluster: str = "kind/cluster.yaml"
    cert_manager_namespace: str = "cert-manager/namespace.yaml"
    cert_manager_values: str = "cert-manager/values.yaml"
    operator_namespace: str = "otel/operator-namespace.yaml"
    operator_values: str = "otel/operator-values.yaml"
    collector: str = "otel/collector.yaml"
    collector_namespaces: str = "otel/namespaces.yaml"
    dynatrace_secret: str = "otel/dynatrace-secret.yaml"
    instrumentation: str = "otel/instrumentation.yaml"
    kong_values: str = "kong/values.yaml"
    kong_config: str = "kong/kong.yaml"
    app: str = "app/simple-demo.yaml"
    sink_namespace: str = "sink/namespace.yaml"
    sink_secret: str = "sink/secret.yaml"
    sink_deployment: str = "sink/deployment.yaml"
    sink_service: str = "sink/service.yaml"


PATHS = Paths()


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def resource_identity(manifests: Path, relative: str, kind: str) -> tuple[str, str]:
    """(name, namespace) of the one ``kind`` resource in a manifest file."""
    for doc in load_yaml_docs(manifests / relative):
        if doc.get("kind") == kind:
            meta = doc.get("metadata") or {}
            return str(meta.get("name")), str(meta.get("namespace") or "default")
    raise ValueError(f"{relative} holds no {kind} resource")


def collector_identity(manifests: Path) -> tuple[str, str]:
    """(name, namespace) of the OpenTelemetryCollector resource in otel/collector.yaml."""
    return resource_identity(manifests, PATHS.collector, "OpenTelemetryCollector")


def instrumentation_identity(manifests: Path) -> tuple[str, str]:
    return resource_identity(manifests, PATHS.instrumentation, "Instrumentation")


def kind_host_ports(manifests: Path) -> dict[int, int]:
    """containerPort (NodePort) -> hostPort from the kind cluster config."""
    cluster = load_yaml_docs(manifests / PATHS.kind_cluster)[0]
    ports: dict[int, int] = {}
    for node in cluster.get("nodes") or []:
        for mapping in node.get("extraPortMappings") or []:
            ports[int(mapping["containerPort"])] = int(mapping["hostPort"])
    return ports
