"""What the docker stack runs: one :class:`ContainerSpec` per container, derived from the manifests.

:func:`container_specs` is the single description of what runs (image, command, env, files, ports, network aliases,
readiness); the stack starts exactly that and ``otelgate up --stack docker --dry-run`` prints exactly that, so the
static tests check the same objects the stack uses.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from otelgate import paths, topology
from otelgate.sinkimage import sink_image_tag
from otelgate.stacks.base import StackSettings

REPO_ROOT = paths.BUNDLE_ROOT  # the image build context in a checkout (Dockerfile); a wheel has none
MANIFESTS = paths.manifests_dir()  # read once, at import (see otelgate.stacks.base.manifests_problem)
KONG_YAML = paths.manifest("kong/kong.yaml")
KONG_VALUES = paths.manifest("kong/values.yaml")
COLLECTOR_YAML = paths.manifest("otel/collector.yaml")
DOCKERFILE = REPO_ROOT / "Dockerfile"

# names and routes from the deployment's otelgate.toml (otelgate.topology), read when this module is imported
TOPOLOGY = topology.current()
TOKEN_ENV = TOPOLOGY.token_env
SECRET_PLACEHOLDER = "<generated at start, never shown>"
KONG_SERVICE_NAME = TOPOLOGY.kong_service_name
KONG_DEPLOYMENT_NAME = TOPOLOGY.deployment_name("docker")  # the collector's KONG_DEPLOYMENT_NAME on this stack
CANARY_PATH = TOPOLOGY.canary_path
GATEWAY_SERVICES = TOPOLOGY.gateway_services               # what Kong routes to
DEMO_SERVICES = TOPOLOGY.demo_services

# Container ports (inside the network). Kong's are the Helm chart's; the collector's come from the resource.
KONG_PROXY_PORT = 8000
KONG_ADMIN_PORT = 8001
KONG_STATUS_PORT = 8100
SINK_PORT = 8080
SERVICE_PORT = 8080
KONG_DECLARATIVE_PATH = "/kong_dbless/kong.yml"          # where the Helm chart mounts it
COLLECTOR_CONFIG_PATH = "/etc/otelcol-contrib/config.yaml"  # the contrib image's own config path
ALL_INTERFACES = "0.0.0.0"
LOOPBACK = "127.0.0.1"

COLLECTOR_TELEMETRY = "collector's own metrics"
LABEL_STACK = "org.otelgate.stack"
LABEL_RUN = "org.otelgate.run"


@dataclass(frozen=True)
class Timeouts:
    """Upper bounds of the stack's own waits (seconds), generous for a loaded CI runner. Image pulls and the sink
    image build are blocking Docker calls outside these."""

    serving: float = 90.0
    canary: float = 60.0
    canary_services: float = 10.0  # the rest of the canary's trace, after Kong's span (not a readiness condition)
    reconfigure: float = 30.0
    stop: int = 10


# ------------------------------------------------------------------------------------------------ container specs


@dataclass(frozen=True)
class ImageBuild:
    """An image built from the project's Dockerfile (through testcontainers) unless the tag already exists."""

    context: Path
    dockerfile: str
    tag: str


@dataclass(frozen=True)
class ContainerFile:
    """A derived config file placed into the container before it starts (``docker cp``, not a bind mount: it works
    the same with a remote daemon, Docker-in-Docker and SELinux hosts). A copy is kept in ``<workdir>/config``."""

    target: str           # path inside the container
    host_name: str        # file name under <workdir>/config
    content: str


@dataclass(frozen=True)
class PortSpec:
    port: int
    purpose: str
    published: bool       # mapped to a random host port (on 127.0.0.1 when the Docker daemon is local)


@dataclass(frozen=True)
class WaitSpec:
    """Ready = ``GET <path>`` on the container ``port`` (through its host mapping) answers ``status``."""

    port: int
    path: str
    status: int = 200
    timeout: float = Timeouts.serving

    def describe(self) -> str:
        return (f"GET {self.path} on container port {self.port} (via its host mapping) answers {self.status} "
                f"within {self.timeout:.0f} s; fails at once if the container exits")


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one container of the stack (and to print or check it without Docker)."""

    name: str                                  # role; also its network alias
    image: str
    purpose: str
    ports: tuple[PortSpec, ...]
    wait: WaitSpec
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: tuple[str, ...] = ()           # filled with the generated token at start; never printed
    entrypoint: tuple[str, ...] | None = None  # None: the image's
    command: tuple[str, ...] | None = None     # None: the image's
    files: tuple[ContainerFile, ...] = ()
    aliases: tuple[str, ...] = ()
    build: ImageBuild | None = None

    def port(self, purpose_or_number: str | int) -> PortSpec:
        for spec in self.ports:
            if spec.port == purpose_or_number or spec.purpose == purpose_or_number:
                return spec
        raise KeyError(f"{self.name} has no port {purpose_or_number!r}")

    def file(self, target: str) -> ContainerFile:
        for item in self.files:
            if item.target == target:
                return item
        raise KeyError(f"{self.name} has no file {target}")


@dataclass(frozen=True)
class CollectorPortsInResource:
    """The ports the collector resource listens on (``host:port`` values of its config)."""

    otlp_grpc: int
    otlp_http: int
    tcplog: int
    prometheus_exporter: int
    health: int
    telemetry: int


def _port_of(address: Any, what: str) -> int:
    match = re.fullmatch(r"(?:[^:]*):(\d+)", str(address or ""))
    if not match:
        raise ValueError(f"collector resource: {what} must be host:port, got {address!r}")
    return int(match.group(1))


def collector_ports_in_resource(resource: Mapping[str, Any]) -> CollectorPortsInResource:
    """Read the listen ports from the resource's ``spec.config`` (they are the container's ports)."""
    from otelgate.collector.config import component_type

    config = resource["spec"]["config"]
    found: dict[str, int] = {}
    for rec_id, rec in (config.get("receivers") or {}).items():
        kind, rec = component_type(rec_id), rec or {}
        if kind == "otlp":
            protocols = rec.get("protocols") or {}
            found["otlp_grpc"] = _port_of((protocols.get("grpc") or {}).get("endpoint"), f"{rec_id} grpc endpoint")
            found["otlp_http"] = _port_of((protocols.get("http") or {}).get("endpoint"), f"{rec_id} http endpoint")
        elif kind in ("tcp_log", "tcplog"):
            found["tcplog"] = _port_of(rec.get("listen_address"), f"{rec_id} listen_address")
    for exp_id, exp in (config.get("exporters") or {}).items():
        if component_type(exp_id) == "prometheus":
            found["prometheus_exporter"] = _port_of((exp or {}).get("endpoint"), f"{exp_id} endpoint")
    for ext_id, ext in (config.get("extensions") or {}).items():
        if component_type(ext_id) == "health_check":
            found["health"] = _port_of((ext or {}).get("endpoint"), f"{ext_id} endpoint")
    for reader in ((config.get("service") or {}).get("telemetry") or {}).get("metrics", {}).get("readers") or []:
        prom = ((reader.get("pull") or {}).get("exporter") or {}).get("prometheus")
        if isinstance(prom, dict) and prom.get("port"):
            found["telemetry"] = int(prom["port"])
    missing = sorted(set(CollectorPortsInResource.__dataclass_fields__) - set(found))
    if missing:
        raise ValueError(f"collector resource: no listen address found for {missing}")
    return CollectorPortsInResource(**found)


def _listen_on_all_interfaces(config: dict[str, Any]) -> dict[str, Any]:
    """In the derived config, every rewritten listen address says ``127.0.0.1``; a container must listen on its
    network interface, so exactly those values (found through ``REWRITES``) get ``0.0.0.0`` back."""
    from otelgate.collector.config import rewritten_by

    def walk(node: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(node, dict):
            return {key: walk(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, (*path, index)) for index, value in enumerate(node)]
        if isinstance(node, str) and rewritten_by(path) is not None:
            if node == LOOPBACK:
                return ALL_INTERFACES
            if node.startswith(f"{LOOPBACK}:"):
                return ALL_INTERFACES + node[len(LOOPBACK):]
        return node

    result: dict[str, Any] = walk(config, ())
    return result


def derive_collector_config(resource: Mapping[str, Any], settings: StackSettings) -> dict[str, Any]:
    """The collector config of the docker stack: ``derive_local_config`` with the resource's own ports, the static
    target ``kong:8100`` and the ``sink`` container as exporter endpoint; listen addresses back on 0.0.0.0."""
    from otelgate.collector import CollectorPorts, derive_local_config

    ports = collector_ports_in_resource(resource)
    config = derive_local_config(
        resource,
        ports=CollectorPorts(**{name: getattr(ports, name) for name in CollectorPorts.__dataclass_fields__}),
        sink_endpoint=f"http://sink:{SINK_PORT}/api/v2/otlp",
        kong_status_target=f"kong:{KONG_STATUS_PORT}",
        drop_processors=settings.drop_processors,
        exporter_token=settings.exporter_token,
        exporter_settings=settings.exporter_settings,
    )
    return _listen_on_all_interfaces(config)


def derive_kong_config(settings: StackSettings, collector_ports: CollectorPortsInResource,
                       kong_yaml: Path = KONG_YAML) -> dict[str, Any]:
    """``kong.yaml`` with upstreams -> ``http://<service>:8080`` and telemetry -> the ``collector`` container."""
    from otelgate import kongconfig

    return kongconfig.derive_kong_config(
        kongconfig.load(kong_yaml),
        upstreams={name: f"http://{name}:{SERVICE_PORT}" for name in GATEWAY_SERVICES},
        otlp_traces_endpoint=f"http://collector:{collector_ports.otlp_http}/v1/traces",
        tcp_log_host="collector",
        tcp_log_port=collector_ports.tcplog,
        plugin_overrides=settings.kong_plugin_overrides(),
    )


def kong_image_and_env(values_path: Path = KONG_VALUES) -> tuple[str, dict[str, str]]:
    """The image and ``KONG_*`` env of the cluster's Helm values (``env.<key>`` -> ``KONG_<KEY>``, as the chart)."""
    values = yaml.safe_load(values_path.read_text()) or {}
    image = values.get("image") or {}
    repository, tag = image.get("repository"), image.get("tag")
    if not repository or not tag:
        raise ValueError(f"{values_path}: image.repository and image.tag must be set")
    env = {f"KONG_{str(key).upper()}": str(value) for key, value in (values.get("env") or {}).items()}
    return f"{repository}:{tag}", env


# env the docker stack adds to (or sets over) the chart's env, each with why; tests compare against the values file
KONG_DOCKER_ENV: dict[str, str] = {
    "KONG_DECLARATIVE_CONFIG": KONG_DECLARATIVE_PATH,              # the chart sets it from dblessConfig
    "KONG_PROXY_LISTEN": f"{ALL_INTERFACES}:{KONG_PROXY_PORT}",   # plain HTTP only, as proxy.tls.enabled=false
    "KONG_ADMIN_LISTEN": f"{ALL_INTERFACES}:{KONG_ADMIN_PORT}",   # reconfigure(): POST /config (chart: admin off)
    "KONG_STATUS_LISTEN": f"{ALL_INTERFACES}:{KONG_STATUS_PORT}", # the chart's status listener (scraped, probed)
    "KONG_PROXY_ACCESS_LOG": "/dev/stdout",
    "KONG_ADMIN_ACCESS_LOG": "/dev/stdout",
    "KONG_PROXY_ERROR_LOG": "/dev/stderr",
    "KONG_ADMIN_ERROR_LOG": "/dev/stderr",
    # info level logs "declarative reconfigure took ..." when a POST /config is applied: reconfigure() waits on it
    "KONG_LOG_LEVEL": "info",
    # Docker's DNS answers with TTL 600; the collector container gets a new IP when it is replaced (a collector
    # reconfigure), and Kong must find it within a second, as a Kubernetes Service IP would never change.
    "KONG_DNS_VALID_TTL": "1",
    # while the collector is away ("collector down" control), `collector` does not resolve; Kong would remember
    # that for 30 s (dns_not_found_ttl) and keep dropping telemetry after the collector is back
    "KONG_DNS_NOT_FOUND_TTL": "1",
    "KONG_ANONYMOUS_REPORTS": "off",                              # a test run phones nowhere
}


def sink_image(reference: str | None = None) -> tuple[str, ImageBuild | None]:
    """``reference`` (``--sink-image``), else ``OTELGATE_SINK_IMAGE``, used as is; else the content-hashed tag
    (:mod:`otelgate.sinkimage`), built here."""
    override = reference or os.environ.get("OTELGATE_SINK_IMAGE")
    if override:
        return override, None
    tag = sink_image_tag(REPO_ROOT)
    return tag, ImageBuild(context=REPO_ROOT, dockerfile=DOCKERFILE.name, tag=tag)


def _demo_env(service: str, otlp_endpoint: str) -> dict[str, str]:
    """The Operator's Python env (the local stack's helper) minus PYTHONPATH: ``opentelemetry-instrument`` puts
    the image's own auto-instrumentation directory there; the host's path would mean nothing in the container."""
    from otelgate.demoapp.launch import Instrumentation

    env = Instrumentation.from_manifest(otlp_endpoint).env(service, base_env={})
    env.pop("PYTHONPATH", None)
    if service == "coupon":
        env["MEMBERSHIP_SERVICE_HOST"] = f"membership:{SERVICE_PORT}"
    return env


def _yaml_text(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def container_specs(
    settings: StackSettings | None = None,
    *,
    kong_yaml: Path = KONG_YAML,
    collector_yaml: Path = COLLECTOR_YAML,
    kong_values: Path = KONG_VALUES,
    sink_image_ref: str | None = None,
) -> list[ContainerSpec]:
    """The containers of the docker stack, in start order: sink, collector, demo services, Kong."""
    from otelgate.collector import load_collector_resource, local_env

    settings = settings or StackSettings()
    resource = load_collector_resource(collector_yaml)
    collector_ports = collector_ports_in_resource(resource)
    collector_config = derive_collector_config(resource, settings)
    kong_config = derive_kong_config(settings, collector_ports, kong_yaml)
    kong_image, kong_env = kong_image_and_env(kong_values)
    sink_tag, sink_build = sink_image(sink_image_ref)
    otlp_endpoint = f"http://collector:{collector_ports.otlp_http}"

    # as the local stack (kong-local) and the kind stack (kong-kind): the inserted name says where data came from
    deployment = {TOPOLOGY.deployment_env: KONG_DEPLOYMENT_NAME}
    collector_env = {k: v for k, v in local_env(resource, token="", **deployment).items()
                     if k != TOKEN_ENV}
    specs = [
        ContainerSpec(
            name="sink", image=sink_tag, build=sink_build, aliases=("sink",),
            purpose="otelgate's fake Dynatrace (dynatrace profile): OTLP ingest and the query API",
            command=("sink", "--host", ALL_INTERFACES, "--port", str(SINK_PORT), "--profile", "dynatrace",
                     "--token-env", TOKEN_ENV),
            secret_env=(TOKEN_ENV,),
            ports=(PortSpec(SINK_PORT, "OTLP ingest /api/v2/otlp and query API /api/", published=True),),
            wait=WaitSpec(SINK_PORT, "/healthz"),
        ),
        ContainerSpec(
            name="collector", image=str(resource["spec"]["image"]), aliases=("collector",),
            purpose=f"the collector resource's own image, config derived from {COLLECTOR_YAML.name}",
            command=(f"--config={COLLECTOR_CONFIG_PATH}",),
            env=collector_env, secret_env=(TOKEN_ENV,),
            files=(ContainerFile(COLLECTOR_CONFIG_PATH, "collector.yaml", _yaml_text(collector_config)),),
            ports=(
                PortSpec(collector_ports.otlp_http, "OTLP/HTTP receiver", published=False),
                PortSpec(collector_ports.otlp_grpc, "OTLP/gRPC receiver", published=False),
                PortSpec(collector_ports.tcplog, "tcp_log receiver (Kong tcp-log)", published=False),
                PortSpec(collector_ports.prometheus_exporter, "prometheus exporter", published=False),
                PortSpec(collector_ports.health, "health_check extension", published=True),
                PortSpec(collector_ports.telemetry, COLLECTOR_TELEMETRY, published=True),
            ),
            wait=WaitSpec(collector_ports.health, _health_path(collector_config)),
        ),
    ]
    for service in DEMO_SERVICES:
        specs.append(ContainerSpec(
            name=service, image=sink_tag, build=sink_build, aliases=(service,),
            purpose=f"demo service {service} under the OpenTelemetry zero-code instrumentation",
            entrypoint=("opentelemetry-instrument",),
            command=("python", "-m", "otelgate.demoapp", service, "--host", ALL_INTERFACES,
                     "--port", str(SERVICE_PORT)),
            env=_demo_env(service, otlp_endpoint),
            ports=(PortSpec(SERVICE_PORT, "HTTP API", published=True),),
            wait=WaitSpec(SERVICE_PORT, "/healthz"),
        ))
    kong_env = {**kong_env, **KONG_DOCKER_ENV,
                "KONG_DATABASE": "off",
                "KONG_TRACING_INSTRUMENTATIONS": "all",
                "KONG_TRACING_SAMPLING_RATE": repr(float(settings.tracing_sampling_rate))}
    specs.append(ContainerSpec(
        name="kong", image=kong_image, aliases=("kong",),
        purpose="Kong Gateway (official image), DB-less with the derived kong.yaml",
        env=kong_env,
        files=(ContainerFile(KONG_DECLARATIVE_PATH, "kong.yaml", _yaml_text(kong_config)),),
        ports=(
            PortSpec(KONG_PROXY_PORT, "proxy (the gateway URL)", published=True),
            PortSpec(KONG_ADMIN_PORT, "Admin API (POST /config)", published=True),
            PortSpec(KONG_STATUS_PORT, "Status API (/status, /metrics)", published=True),
        ),
        wait=WaitSpec(KONG_STATUS_PORT, "/status/ready"),
    ))
    return specs


def _health_path(config: Mapping[str, Any]) -> str:
    for ext_id, ext in (config.get("extensions") or {}).items():
        if ext_id.split("/", 1)[0] == "health_check":
            return str((ext or {}).get("path") or "/")
    raise ValueError("the collector config has no health_check extension: the stack could not tell it is serving")


def spec_by_name(specs: Sequence[ContainerSpec], name: str) -> ContainerSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(f"no container {name!r}; the stack has {[s.name for s in specs]}")


def kong_deployment_name(collector_spec: ContainerSpec) -> str:
    """What the collector's attributes processor inserts as ``kong.deployment.name``, env references resolved."""
    config = yaml.safe_load(collector_spec.file(COLLECTOR_CONFIG_PATH).content)
    for proc_id, proc in (config.get("processors") or {}).items():
        if not str(proc_id).startswith("attributes"):
            continue
        for action in (proc or {}).get("actions") or []:
            if action.get("key") == "kong.deployment.name" and action.get("value") is not None:
                return re.sub(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}",
                              lambda m: str(collector_spec.env.get(m.group(1), m.group(0))), str(action["value"]))
    return "kong"


def effective_sampling_rate(settings: StackSettings, kong_spec: ContainerSpec) -> float:
    """The rate Kong samples with: the opentelemetry plugin's ``sampling_rate`` if the config sets one, else
    kong.conf ``tracing_sampling_rate`` (docs/reference/kong-3.9.md#sampling-decision)."""
    doc = yaml.safe_load(kong_spec.file(KONG_DECLARATIVE_PATH).content)
    for plugin in doc.get("plugins") or []:
        if plugin.get("name") == "opentelemetry" and (plugin.get("config") or {}).get("sampling_rate") is not None:
            return float(plugin["config"]["sampling_rate"])
    return float(settings.tracing_sampling_rate)

