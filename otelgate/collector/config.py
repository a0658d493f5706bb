"""The collector config of the cluster, made runnable on 127.0.0.1 with a small, explicit list of rewrites.

``manifests/otel/collector.yaml`` holds the ``OpenTelemetryCollector`` resource of the deployment. The local stack
runs its ``spec.config`` unchanged except at the keys of :data:`REWRITES` (a test proves it). Three fault knobs,
``drop_processors``, ``exporter_token`` and ``exporter_settings``, exist for negative controls only and are outside
that guarantee.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from otelgate import paths, topology
from otelgate.cluster_topology import TOPOLOGY
from otelgate.procs import free_port

RESOURCE_FILE = "otel/collector.yaml"  # in the manifests folder
LOOPBACK = "127.0.0.1"

# What Kubernetes pod discovery attaches to Kong's pod (Kong Helm chart: label app.kubernetes.io/name=kong, status
# listener on container port 8100 named "status", Kong's namespace on the cluster). The static target carries these
# labels so the cluster's relabel rules run unchanged locally; Prometheus drops every __meta_* label after relabelling.
KONG_POD_METADATA: dict[str, str] = {
    "__meta_kubernetes_namespace": TOPOLOGY.kong_namespace,
    "__meta_kubernetes_pod_name": "kong-local",
    "__meta_kubernetes_pod_label_app_kubernetes_io_name": "kong",
    "__meta_kubernetes_pod_container_name": "proxy",
    "__meta_kubernetes_pod_container_port_name": "status",
    "__meta_kubernetes_pod_container_port_number": "8100",
}


@dataclass(frozen=True)
class Rewrite:
    """One rewritten key: ``section`` / a component whose type is in ``types`` / ``key`` (``*`` = any list index).

    Everything below the key counts as rewritten too.
    """

    section: str
    types: tuple[str, ...]
    key: tuple[str, ...]
    why: str

    def matches(self, path: Sequence[str | int]) -> bool:
        if len(path) < 2 + len(self.key) or path[0] != self.section:
            return False
        if component_type(str(path[1])) not in self.types:
            return False
        return all(want == "*" or str(got) == want for want, got in zip(self.key, path[2:], strict=False))

    def describe(self) -> str:
        return f"{self.section}.<{'|'.join(self.types)}>.{'.'.join(self.key)}: {self.why}"


OTLP_RECEIVER = ("otlp",)
TCPLOG_RECEIVER = ("tcp_log", "tcplog")
PROMETHEUS = ("prometheus",)
OTLP_HTTP_EXPORTER = ("otlp_http", "otlphttp")
HEALTH_CHECK = ("health_check",)
TELEMETRY = ("telemetry",)  # service.telemetry is addressed like a component

REWRITES: tuple[Rewrite, ...] = (
    Rewrite("receivers", OTLP_RECEIVER, ("protocols", "grpc", "endpoint"), "127.0.0.1:<free port>"),
    Rewrite("receivers", OTLP_RECEIVER, ("protocols", "http", "endpoint"), "127.0.0.1:<free port>"),
    Rewrite("receivers", TCPLOG_RECEIVER, ("listen_address",), "127.0.0.1:<free port>"),
    Rewrite("receivers", PROMETHEUS, ("config", "scrape_configs", "*", "kubernetes_sd_configs"),
            "pod discovery removed (no Kubernetes API locally)"),
    Rewrite("receivers", PROMETHEUS, ("config", "scrape_configs", "*", "static_configs"),
            "a static target: the Kong Status API host:port, labelled with the pod metadata discovery would give"),
    Rewrite("exporters", OTLP_HTTP_EXPORTER, ("endpoint",), "the local sink's OTLP endpoint"),
    Rewrite("exporters", PROMETHEUS, ("endpoint",), "127.0.0.1:<free port>"),
    Rewrite("extensions", HEALTH_CHECK, ("endpoint",), "127.0.0.1:<free port>"),
    Rewrite("service", TELEMETRY, ("metrics", "readers", "*", "pull", "exporter", "prometheus", "host"), "127.0.0.1"),
    Rewrite("service", TELEMETRY, ("metrics", "readers", "*", "pull", "exporter", "prometheus", "port"),
            "<free port>"),
)


def component_type(component_id: str) -> str:
    """``otlp_http/dynatrace`` -> ``otlp_http``."""
    return component_id.split("/", 1)[0]


@dataclass(frozen=True)
class CollectorPorts:
    """Every port the derived config listens on, all on 127.0.0.1."""

    otlp_http: int
    otlp_grpc: int
    tcplog: int
    prometheus_exporter: int
    health: int
    telemetry: int

    @classmethod
    def allocate(cls) -> CollectorPorts:
        ports: set[int] = set()
        while len(ports) < len(fields(cls)):
            ports.add(free_port(LOOPBACK))
        return cls(*sorted(ports))


# ---------------------------------------------------------------------------------------------------- loading
def load_collector_resource(path: str | Path | None = None) -> dict[str, Any]:
    """The ``OpenTelemetryCollector`` document of a (multi-document) manifest; by default the manifests folder's
    ``otel/collector.yaml``."""
    path = paths.manifest(RESOURCE_FILE) if path is None else Path(path)
    if not path.is_absolute() and not path.exists():
        path = paths.BUNDLE_ROOT / path
    found = [doc for doc in yaml.safe_load_all(path.read_text())
             if isinstance(doc, dict) and doc.get("kind") == "OpenTelemetryCollector"]
    if len(found) != 1:
        raise ValueError(f"{path} must hold exactly one OpenTelemetryCollector resource, found {len(found)}")
    resource = found[0]
    if not isinstance(resource.get("spec", {}).get("config"), dict):
        raise ValueError(f"{path}: spec.config of the OpenTelemetryCollector must be structured YAML (v1beta1)")
    return resource


def resource_config(resource: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(dict(resource["spec"]["config"]))


def resource_plain_env(resource: Mapping[str, Any]) -> dict[str, str]:
    """The resource's ``spec.env`` entries with literal values (secret references are the caller's business)."""
    return {str(entry["name"]): str(entry["value"]) for entry in resource["spec"].get("env") or []
            if "value" in entry}


# ---------------------------------------------------------------------------------------------------- derivation
def derive_local_config(
    cr_config: Mapping[str, Any],
    *,
    ports: CollectorPorts,
    sink_endpoint: str,
    kong_status_target: str,
    drop_processors: Iterable[str] = (),
    exporter_token: str | None = None,
    exporter_settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The resource's config with only the :data:`REWRITES` applied (plus the fault knobs, when used).

    ``sink_endpoint`` is what an otlp_http exporter's ``endpoint`` should be (``SinkServer.otlp_endpoint``);
    ``kong_status_target`` is ``host:port`` of Kong's Status API. The Dynatrace token stays
    ``${env:DT_API_TOKEN}``: give it to the process through its environment, never through the file.
    ``cr_config`` is ``spec.config`` of the resource (the whole resource is accepted too).
    """
    if cr_config.get("kind") == "OpenTelemetryCollector":  # the whole resource was passed
        cr_config = cr_config["spec"]["config"]
    config = copy.deepcopy(dict(cr_config))
    _rewrite_receivers(config.get("receivers") or {}, ports, kong_status_target)
    _rewrite_exporters(config.get("exporters") or {}, ports, sink_endpoint)
    for ext_id, ext in (config.get("extensions") or {}).items():
        if component_type(ext_id) in HEALTH_CHECK:
            _mapping(config["extensions"], ext_id, ext)["endpoint"] = f"{LOOPBACK}:{ports.health}"
    _rewrite_telemetry(config.setdefault("service", {}), ports)
    if drop_processors:
        _drop_processors(config, set(drop_processors))
    if exporter_token is not None:
        _set_exporter_token(config, exporter_token)
    if exporter_settings:
        _merge_exporter_settings(config, exporter_settings)
    return config


def _mapping(parent: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A component written as ``name:`` (None) becomes ``{}`` so a key can be set in it."""
    if value is None:
        parent[key] = value = {}
    if not isinstance(value, dict):
        raise ValueError(f"component {key!r} must be a mapping, got {type(value).__name__}")
    return value


def _rewrite_receivers(receivers: dict[str, Any], ports: CollectorPorts, kong_status_target: str) -> None:
    for rec_id, rec in list(receivers.items()):
        kind = component_type(rec_id)
        if kind in OTLP_RECEIVER:
            protocols = _mapping(receivers, rec_id, rec).get("protocols") or {}
            for proto, port in (("grpc", ports.otlp_grpc), ("http", ports.otlp_http)):
                if proto in protocols:
                    _mapping(protocols, proto, protocols[proto])["endpoint"] = f"{LOOPBACK}:{port}"
        elif kind in TCPLOG_RECEIVER:
            _mapping(receivers, rec_id, rec)["listen_address"] = f"{LOOPBACK}:{ports.tcplog}"
        elif kind in PROMETHEUS:
            scrape_configs = ((rec or {}).get("config") or {}).get("scrape_configs") or []
            for scrape in scrape_configs:
                if scrape.pop("kubernetes_sd_configs", None) is not None:
                    scrape["static_configs"] = [{"targets": [kong_status_target], "labels": dict(KONG_POD_METADATA)}]


def _rewrite_exporters(exporters: dict[str, Any], ports: CollectorPorts, sink_endpoint: str) -> None:
    for exp_id, exp in exporters.items():
        kind = component_type(exp_id)
        if kind in OTLP_HTTP_EXPORTER:
            _mapping(exporters, exp_id, exp)["endpoint"] = sink_endpoint
        elif kind in PROMETHEUS:
            _mapping(exporters, exp_id, exp)["endpoint"] = f"{LOOPBACK}:{ports.prometheus_exporter}"


def _rewrite_telemetry(service: dict[str, Any], ports: CollectorPorts) -> None:
    """Point the collector's own metrics at a free port (the default, 8888, would collide between collectors)."""
    telemetry = service.setdefault("telemetry", {})
    metrics = telemetry.setdefault("metrics", {})
    readers = metrics.get("readers")
    if metrics.get("level") == "none":
        return
    if not readers:
        metrics["readers"] = readers = [{"pull": {"exporter": {"prometheus": {}}}}]
    for reader in readers:
        prom = ((reader.get("pull") or {}).get("exporter") or {}).get("prometheus")
        if isinstance(prom, dict):
            prom["host"], prom["port"] = LOOPBACK, ports.telemetry


def _drop_processors(config: dict[str, Any], names: set[str]) -> None:
    """Fault knob: take processors out of every pipeline (a processor id, or a type such as ``cumulative_to_delta``)."""
    known = set((config.get("processors") or {}).keys())
    unknown = {n for n in names if n not in known and not any(component_type(k) == n for k in known)}
    if unknown:
        raise ValueError(f"drop_processors: {sorted(unknown)} not among the config's processors {sorted(known)}")
    for pipeline in (config.get("service", {}).get("pipelines") or {}).values():
        pipeline["processors"] = [p for p in pipeline.get("processors") or []
                                  if p not in names and component_type(p) not in names]


def _set_exporter_token(config: dict[str, Any], token: str) -> None:
    """Fault knob: a literal (wrong) token in the otlp_http exporters' Authorization header."""
    for exp_id, exp in (config.get("exporters") or {}).items():
        if component_type(exp_id) in OTLP_HTTP_EXPORTER:
            _mapping(config["exporters"], exp_id, exp).setdefault("headers", {})["Authorization"] = f"Api-Token {token}"


def _merge_exporter_settings(config: dict[str, Any], settings: Mapping[str, Any]) -> None:
    """Fault/measurement knob: deep-merge ``settings`` into every otlp_http exporter (e.g. a smaller
    ``sending_queue`` or ``retry_on_failure.enabled: false``)."""
    def merge(into: dict[str, Any], changes: Mapping[str, Any]) -> None:
        for key, value in changes.items():
            if isinstance(value, Mapping) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value

    for exp_id, exp in (config.get("exporters") or {}).items():
        if component_type(exp_id) in OTLP_HTTP_EXPORTER:
            merge(_mapping(config["exporters"], exp_id, exp), settings)


# ---------------------------------------------------------------------------------------------------- helpers
def local_env(resource: Mapping[str, Any], token: str, **overrides: str) -> dict[str, str]:
    """The environment the operator would give the pod, for a local run: literal env + the token."""
    return {**resource_plain_env(resource), topology.current().token_env: token, **overrides}


def health_endpoint(config: Mapping[str, Any]) -> str:
    """``http://host:port/`` of the config's health_check extension."""
    for ext_id, ext in (config.get("extensions") or {}).items():
        if component_type(ext_id) in HEALTH_CHECK:
            endpoint = str((ext or {}).get("endpoint") or "localhost:13133")
            path = str((ext or {}).get("path") or "/")
            return f"http://{endpoint.replace('0.0.0.0', LOOPBACK)}{path}"
    raise ValueError("the config has no health_check extension")


def rewritten_by(path: Sequence[str | int]) -> Rewrite | None:
    return next((rewrite for rewrite in REWRITES if rewrite.matches(path)), None)


def dump_config(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)

