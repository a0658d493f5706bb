"""The docker stack: real Kong 3.9 and the real collector in containers, on one Docker network, no Kubernetes.

    client -> Kong (official image, DB-less, the derived kong.yaml) -> demo services (otelgate image, zero-code
                 |  opentelemetry (OTLP/HTTP), tcp-log, /metrics scraped on kong:8100      |  OTLP/HTTP
                 v                                                                        v
            collector (the CR's contrib image, config derived from manifests/otel/collector.yaml)
                 v
            sink (otelgate's fake Dynatrace, the image built from the project's Dockerfile)

The containers are started with testcontainers-python. :func:`container_specs` is the single description of what
runs (image, command, env, files, ports, network aliases, readiness); the stack starts exactly that, and
``otelgate up --stack docker --dry-run`` prints exactly that (:func:`plan`), so the static tests check the same
objects the stack uses.

Configs come from the cluster's manifests by the same explicit rewrites the local stack uses:
``otelgate.kongconfig.derive_kong_config`` (``KONG_REWRITES``: upstream URLs -> ``http://<service>:8080``, the
traces endpoint and tcp-log target -> the ``collector`` container) and ``otelgate.collector.derive_local_config``
(``REWRITES``: pod discovery -> the static target ``kong:8100``, the exporter -> the ``sink`` container). The
collector's listen addresses are then put back to the resource's own ``0.0.0.0:<port>`` (a container must listen
on its network interface), so in the container they equal the manifest.

Readiness means "serving": HTTP 200 from the sink's ``/healthz``, the collector's health_check extension, each demo
service's ``/healthz`` and Kong's ``/status/ready`` (the Helm chart's readiness probe), then one canary request
whose whole trace reaches the sink. A wait fails at once, with the log tail, if its container exits.

No Docker engine exists where this module is developed: it is verified statically (see docs/docker.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from otelgate.stacks.base import StackSettings, append_timing, summary_tail
from otelgate.waiting import poll_until

if TYPE_CHECKING:
    import pytest

    from otelgate.sink.client import SinkClient

REPO_ROOT = Path(__file__).resolve().parents[2]
KONG_YAML = REPO_ROOT / "manifests" / "kong" / "kong.yaml"
KONG_VALUES = REPO_ROOT / "manifests" / "kong" / "values.yaml"
COLLECTOR_YAML = REPO_ROOT / "manifests" / "otel" / "collector.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"

TOKEN_ENV = "DT_API_TOKEN"
SECRET_PLACEHOLDER = "<generated at start, never shown>"
KONG_SERVICE_NAME = "kong-otel"
KONG_DEPLOYMENT_NAME = "kong-docker"                    # the collector's KONG_DEPLOYMENT_NAME on this stack
CANARY_PATH = "/coupon/coupons"
GATEWAY_SERVICES = ("coupon", "inventory", "pricing")      # what Kong routes to
DEMO_SERVICES = ("membership", "coupon", "inventory", "pricing")

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

KONG_SIDE = frozenset({"sampling_rate", "kong_plugin_config"})
KONG_RESTART = frozenset({"tracing_sampling_rate"})        # kong.conf: only a new container changes it
COLLECTOR_SIDE = frozenset({"drop_processors", "exporter_token", "collector_running"})

# Kong's runloop logs this (level info) on every worker once a declarative reload is applied
# (kong/runloop/events.lua reconfigure_handler); it is the evidence that POST /config took effect.
RECONFIGURE_DONE = "declarative reconfigure took"
RECONFIGURE_FAILED = "declarative reconfigure failed"
COLLECTOR_TELEMETRY = "collector's own metrics"
LABEL_STACK = "org.otelgate.stack"
LABEL_RUN = "org.otelgate.run"


class DockerStackError(RuntimeError):
    """The docker stack could not be brought up or changed; the message says which step and what it saw."""


@dataclass(frozen=True)
class Timeouts:
    """Upper bounds of the stack's own waits (seconds), generous for a loaded CI runner. Image pulls and the sink
    image build are blocking Docker calls outside these."""

    serving: float = 90.0
    canary: float = 60.0
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
    )
    return _listen_on_all_interfaces(config)


def derive_kong_config(settings: StackSettings, collector_ports: CollectorPortsInResource,
                       kong_yaml: Path = KONG_YAML) -> dict[str, Any]:
    """``kong.yaml`` with upstreams -> ``http://<service>:8080`` and telemetry -> the ``collector`` container."""
    from otelgate import kongconfig

    overrides: dict[str, dict[str, Any]] = {name: dict(keys) for name, keys in settings.kong_plugin_config.items()}
    if settings.sampling_rate is not None:
        overrides.setdefault("opentelemetry", {})["sampling_rate"] = settings.sampling_rate
    return kongconfig.derive_kong_config(
        kongconfig.load(kong_yaml),
        upstreams={name: f"http://{name}:{SERVICE_PORT}" for name in GATEWAY_SERVICES},
        otlp_traces_endpoint=f"http://collector:{collector_ports.otlp_http}/v1/traces",
        tcp_log_host="collector",
        tcp_log_port=collector_ports.tcplog,
        plugin_overrides=overrides,
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


def sink_image() -> tuple[str, ImageBuild | None]:
    """``OTELGATE_SINK_IMAGE`` if set (used as is), else the kind stack's content-hashed tag, built here."""
    override = os.environ.get("OTELGATE_SINK_IMAGE")
    if override:
        return override, None
    from otelgate.stacks.kind_addons import sink_image_tag

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
) -> list[ContainerSpec]:
    """The containers of the docker stack, in start order: sink, collector, demo services, Kong."""
    from otelgate.collector import load_collector_resource, local_env

    settings = settings or StackSettings()
    resource = load_collector_resource(collector_yaml)
    collector_ports = collector_ports_in_resource(resource)
    collector_config = derive_collector_config(resource, settings)
    kong_config = derive_kong_config(settings, collector_ports, kong_yaml)
    kong_image, kong_env = kong_image_and_env(kong_values)
    sink_tag, sink_build = sink_image()
    otlp_endpoint = f"http://collector:{collector_ports.otlp_http}"

    # as the local stack (kong-local) and the kind stack (kong-kind): the inserted name says where data came from
    collector_env = {k: v for k, v in local_env(resource, token="", KONG_DEPLOYMENT_NAME=KONG_DEPLOYMENT_NAME).items()
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


# ------------------------------------------------------------------------------------------------ dry run, prereqs


def _settings_from_options(options: Any) -> StackSettings:
    sampling_rate = getattr(options, "sampling_rate", None)
    tracing = getattr(options, "tracing_sampling_rate", None)
    return StackSettings(sampling_rate=sampling_rate,
                         tracing_sampling_rate=1.0 if tracing is None else float(tracing))


def _describe_spec(index: int, spec: ContainerSpec) -> list[str]:
    lines = [f"{index}. container {spec.name}: {spec.purpose}",
             f"     image: {spec.image}" + (" (built above)" if spec.build else " (pulled if missing)"),
             f"     network alias: {', '.join(spec.aliases)}",
             f"     entrypoint: {' '.join(spec.entrypoint) if spec.entrypoint else '(image default)'}",
             f"     command: {' '.join(spec.command) if spec.command else '(image default)'}"]
    env_lines = [f"{key}={value}" for key, value in sorted(spec.env.items())]
    env_lines += [f"{key}={SECRET_PLACEHOLDER}" for key in spec.secret_env]
    lines.append("     env:" + ("" if env_lines else " (none)"))
    lines.extend(f"       {line}" for line in env_lines)
    for item in spec.files:
        lines.append(f"     file: {item.target} <- <workdir>/config/{item.host_name} (copied in before start)")
    for port in spec.ports:
        where = "published on a random host port" if port.published else "network only"
        lines.append(f"     port: {port.port}/tcp {port.purpose} ({where})")
    lines.append(f"     ready when: {spec.wait.describe()}")
    return lines


def _rewrite_lines(settings: StackSettings, specs: Sequence[ContainerSpec]) -> list[str]:
    from otelgate import kongconfig
    from otelgate.collector import load_collector_resource, resource_config
    from otelgate.collector.config import rewritten_by

    lines = ["derived configs (the manifests, changed only at their documented rewrites):",
             f"  kong.yaml vs {KONG_YAML} (otelgate.kongconfig.KONG_REWRITES + overrides):"]
    kong_doc = yaml.safe_load(spec_by_name(specs, "kong").file(KONG_DECLARATIVE_PATH).content)
    original = kongconfig.load(KONG_YAML)
    for diff_path in kongconfig.config_diff(original, kong_doc):
        lines.append(f"    {diff_path}: {_lookup_diff(kong_doc, diff_path)}")
    lines.append(f"  collector config vs {COLLECTOR_YAML} spec.config (otelgate.collector.REWRITES):")
    collector_doc = yaml.safe_load(spec_by_name(specs, "collector").file(COLLECTOR_CONFIG_PATH).content)
    for path, value in _changed_leaves(resource_config(load_collector_resource(COLLECTOR_YAML)), collector_doc):
        rule = rewritten_by(path)
        lines.append(f"    {'.'.join(map(str, path))} = {json.dumps(value)}"
                     + (f"  [{rule.why}]" if rule else "  [NOT A DOCUMENTED REWRITE]"))
    return lines


def _lookup_diff(doc: Any, path: str) -> str:
    """The new value at a ``kongconfig.config_diff`` path (``services[coupon].url``), for printing."""
    node = doc
    for part in re.findall(r"[^.\[\]]+|\[[^\]]+\]", path):
        if part.startswith("["):
            key = part[1:-1]
            node = next((x for i, x in enumerate(node) if (isinstance(x, dict) and x.get("name") == key)
                         or str(i) == key), None)
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            node = None
    return "(removed)" if node is None else json.dumps(node)


def _changed_leaves(before: Any, after: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...],
                                                                                              Any]]:
    """``(path, new value)`` for each place ``after`` differs from ``before`` (a removed key reports None)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[tuple[tuple[str | int, ...], Any]] = []
        for key in list(before) + [k for k in after if k not in before]:
            out.extend(_changed_leaves(before.get(key), after.get(key), (*path, key)))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [item for index, (b, a) in enumerate(zip(before, after, strict=True))
                for item in _changed_leaves(b, a, (*path, index))]
    return [] if before == after else [(path, after)]


def plan(options: Any = None) -> list[str]:
    """What ``DockerStack.start`` would do, in order (``otelgate up --stack docker --dry-run``)."""
    settings = _settings_from_options(options)
    specs = container_specs(settings)
    builds = {spec.build.tag: spec.build for spec in specs if spec.build}
    pulls = sorted({spec.image for spec in specs if spec.build is None})
    lines = ["docker stack plan (testcontainers-python; nothing is started by --dry-run):",
             f"settings: sampling_rate={settings.sampling_rate} tracing_sampling_rate={settings.tracing_sampling_rate}",
             "prerequisites: a reachable Docker daemon (otelgate up --stack docker --check-prerequisites) and "
             "pip install 'otelgate[docker]'"]
    step = 1
    for tag, build in builds.items():
        lines.append(f"{step}. image {tag}: built from {build.context / build.dockerfile} (context {build.context}, "
                     ".dockerignore applies) unless the tag exists; the tag hashes what goes into the image")
        step += 1
    if not builds:
        lines.append(f"{step}. image {spec_by_name(specs, 'sink').image}: from OTELGATE_SINK_IMAGE, not built")
        step += 1
    lines.append(f"{step}. images pulled if missing: {', '.join(pulls)}")
    step += 1
    lines.append(f"{step}. network otelgate-<run id> (a user-defined bridge: containers reach each other by alias)")
    step += 1
    for spec in specs:
        lines.extend(_describe_spec(step, spec))
        step += 1
    lines.append(f"{step}. all containers start at once; then each is waited on in the order above (ready when ...)")
    step += 1
    lines.append(f"{step}. canary: GET {CANARY_PATH} through Kong's proxy with a traceparent Kong samples at any rate "
                 "above 0, until that trace (kong-otel -> coupon -> membership) is in the sink; then the sink is reset")
    step += 1
    lines.append(f"{step}. end: containers and network removed (kept with --keep / pytest --keep-stack); on a failed "
                 "bring-up every container's log is written to <workdir>/diagnostics first")
    lines.extend(_rewrite_lines(settings, specs))
    return lines


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _ping_daemon() -> str | None:
    """None if a Docker daemon answers ``/_ping``; else why not."""
    host = _docker_host()
    try:
        import docker
    except ImportError:
        docker = None
    if docker is not None:
        try:
            client = docker.from_env(timeout=10)
            try:
                client.ping()
            finally:
                client.close()
            return None
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    # without the docker SDK: the Engine API's /_ping over the socket or plain TCP
    try:
        if host.startswith("unix://"):
            transport = httpx.HTTPTransport(uds=host[len("unix://"):])
            response = httpx.Client(transport=transport, timeout=5.0).get("http://docker/_ping")
        elif host.startswith("tcp://"):
            response = httpx.get(f"http://{host[len('tcp://'):]}/_ping", timeout=5.0)
        else:
            return f"cannot check DOCKER_HOST={host} without the docker SDK"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if response.status_code == 200 else f"/_ping answered HTTP {response.status_code}"


def daemon_problem() -> str | None:
    """None if a Docker daemon answers; else a message that says where it looked and what to do."""
    why = _ping_daemon()
    if why is None:
        return None
    return (f"no reachable Docker daemon at {_docker_host()} ({why}). Start Docker (Docker Desktop, or "
            "`sudo systemctl start docker`), or point DOCKER_HOST at a running daemon; `docker info` must work. "
            "With a non-default `docker context` (Docker Desktop on Linux, Colima, Rancher Desktop, Podman): "
            "export DOCKER_HOST=$(docker context inspect --format '{{.Endpoints.docker.Host}}')")


def check_prerequisites() -> list[str]:
    """What would stop the docker stack from starting (empty when it can start)."""
    problems: list[str] = []
    for module in ("testcontainers", "docker"):
        try:
            __import__(module)
        except ImportError:
            problems.append(f"python package {module!r} is not installed: pip install 'otelgate[docker]'")
    problem = daemon_problem()
    if problem is not None:
        problems.append(problem)
    for path in (KONG_YAML, KONG_VALUES, COLLECTOR_YAML):
        if not path.is_file():
            problems.append(f"{path} is missing")
    if not os.environ.get("OTELGATE_SINK_IMAGE") and not DOCKERFILE.is_file():
        problems.append(f"{DOCKERFILE} is missing: run from an otelgate source checkout, or set OTELGATE_SINK_IMAGE "
                        "to a built otelgate image")
    if not problems:
        try:
            container_specs()
        except Exception as exc:  # a broken manifest fails here, before any image is pulled
            problems.append(f"the container specs cannot be derived from the manifests: {exc}")
    return problems


# ------------------------------------------------------------------------------------------------ the stack


def generate_token() -> str:
    from otelgate.stacks.local import generate_token as local_generate_token

    return local_generate_token()


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "<redacted>") if secret else text


class ContainerExited(Exception):
    """A container stopped while the stack waited for it to serve (not retried)."""


@dataclass
class _Running:
    spec: ContainerSpec
    container: Any            # testcontainers DockerContainer
    generation: int = 0       # bumped each time the container is replaced


class DockerStack:
    """Implements :class:`otelgate.stacks.base.Stack` with containers (see the module docstring)."""

    name = "docker"

    def __init__(self, settings: StackSettings | None = None, workdir: Path | None = None, *, keep: bool = False,
                 timeouts: Timeouts | None = None) -> None:
        self.settings = settings or StackSettings()
        self.workdir = Path(workdir) if workdir is not None else Path.cwd() / "artifacts" / "docker-stack"
        self.keep = keep
        self.timeouts = timeouts or Timeouts()
        self.run_id = uuid.uuid4().hex[:8]
        self._token = generate_token()
        self.specs = container_specs(self.settings)
        self.kong_deployment_name = kong_deployment_name(spec_by_name(self.specs, "collector"))
        self.running: dict[str, _Running] = {}
        self._generations: dict[str, int] = {}       # containers of one role so far (replacements count)
        self.network: Any = None
        self._network_created = False
        self.publish_ip: str | None = LOOPBACK      # None: the daemon's default (all interfaces)
        self.gateway_url = ""
        self.sink_url = ""
        self._sink: SinkClient | None = None
        self.bring_up_seconds: float | None = None
        self.canary_trace_id: str | None = None
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, settings: StackSettings | None = None, workdir: Path | None = None, **options: Any) -> DockerStack:
        """Bring the stack up (see :func:`plan`); on failure write diagnostics, tear down, raise."""
        stack = cls(settings, workdir, **options)
        try:
            stack._bring_up()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                where = stack.diagnose(stack.workdir / "diagnostics")
                stack._say(f"bring-up failed; container logs and configs are in {where}")
            try:
                stack.close(force=True)
            except Exception as teardown:  # report, but never hide why the bring-up failed
                stack._say(f"teardown after the failed bring-up was incomplete: {teardown}")
            if isinstance(exc, DockerStackError | KeyboardInterrupt):
                raise
            raise DockerStackError(redact(f"the docker stack did not come up: {exc}", stack._token)) from exc
        if stack.keep:
            stack._say("will be " + stack.kept_message())
        return stack

    def __enter__(self) -> DockerStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _say(self, message: str) -> None:
        print(f"[docker stack] {message}", flush=True)

    def _bring_up(self) -> None:
        started = time.monotonic()
        # this run's files only: a reused workdir (artifacts/docker-stack) must not mix in an earlier run's logs
        for sub in ("logs", "config", "diagnostics"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        (self.workdir / "timings.txt").unlink(missing_ok=True)
        for sub in ("logs", "config"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        for spec in self.specs:  # written first: a failed start still leaves the derived configs to read
            self._write_files(spec)
        problem = daemon_problem()
        if problem is not None:
            raise DockerStackError(problem)
        tc = _testcontainers()
        if self.keep:
            # Ryuk removes every container of the session when this process ends; --keep must outlive it
            tc.config.ryuk_disabled = True
        self._choose_publish_address()
        self._ensure_images()
        self.network = tc.Network()
        self.network.name = f"otelgate-{self.run_id}"
        self.network.create()
        self._network_created = True
        for spec in self.specs:
            self._launch(spec)
        for spec in self.specs:
            self._wait_serving(spec.name)
        kong = self.running["kong"]
        self.gateway_url = self._url(kong, KONG_PROXY_PORT)
        self.sink_url = self._url(self.running["sink"], SINK_PORT)
        from otelgate.sink.client import SinkClient

        self._sink = SinkClient(self.sink_url)
        self._canary()
        self.bring_up_seconds = time.monotonic() - started
        self._timing(f"bring-up to first green canary: {self.bring_up_seconds:.2f} s")

    def _choose_publish_address(self) -> None:
        """Publish on 127.0.0.1 when the daemon is on this machine; a remote or DinD daemon needs its default."""
        from testcontainers.core.config import ConnectionMode
        from testcontainers.core.docker_client import DockerClient

        client = DockerClient()
        try:
            local = client.get_connection_mode() == ConnectionMode.docker_host and client.host() in (
                "localhost", LOOPBACK, "::1")
        finally:
            client.client.close()
        self.publish_ip = LOOPBACK if local else None

    def _ensure_images(self) -> None:
        import docker

        client = docker.from_env()
        try:
            for spec in self.specs:
                if spec.build is not None:
                    self._build(client, spec.build)
            for image in sorted({s.image for s in self.specs if s.build is None}):
                self._pull(client, image)
        finally:
            client.close()

    def _build(self, client: Any, build: ImageBuild) -> None:
        import docker

        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(build.tag)
            return
        from testcontainers.core.image import DockerImage

        self._say(f"building {build.tag} from {build.context / build.dockerfile}")
        t0 = time.monotonic()
        log_path = self.workdir / "logs" / "sink-image-build.log"
        image = DockerImage(path=build.context, tag=build.tag, dockerfile_path=build.dockerfile, clean_up=False)
        try:
            image.build()
        except docker.errors.BuildError as exc:
            log_path.write_text("".join(str(chunk.get("stream", chunk)) for chunk in exc.build_log))
            raise DockerStackError(f"building {build.tag} failed: {exc}; build log in {log_path}") from None
        log_path.write_text("".join(str(chunk.get("stream", "")) for chunk in image.get_logs()))
        self._timing(f"built {build.tag} in {time.monotonic() - t0:.1f} s")

    def _pull(self, client: Any, image: str) -> None:
        import docker

        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(image)
            return
        self._say(f"pulling {image}")
        t0 = time.monotonic()
        repository, _, tag = image.rpartition(":")
        client.images.pull(repository, tag=tag)
        self._timing(f"pulled {image} in {time.monotonic() - t0:.1f} s")

    def _container_name(self, spec: ContainerSpec, generation: int) -> str:
        return f"otelgate-{self.run_id}-{spec.name}" + (f"-{generation}" if generation else "")

    def _launch(self, spec: ContainerSpec, generation: int = 0, host_ports: Mapping[int, int] | None = None) -> None:
        """Create and start one container (no waiting here: every container starts at once, then each is waited
        on). ``host_ports`` pins published ports, so a replaced Kong keeps the gateway URL the suites hold."""
        tc = _testcontainers()
        self._write_files(spec)
        container = tc.DockerContainer(spec.image)
        container.with_name(self._container_name(spec, generation))
        container.with_network(self.network).with_network_aliases(*spec.aliases)
        container.with_envs(**{**spec.env, **{name: self._token for name in spec.secret_env}})
        for port in spec.ports:
            if port.published:
                host_port = (host_ports or {}).get(port.port)
                binding: Any = (self.publish_ip, host_port) if self.publish_ip else host_port
                container.ports[f"{port.port}/tcp"] = binding
        for item in spec.files:
            container.with_copy_into_container(item.content.encode(), item.target, 0o644)
        kwargs: dict[str, Any] = {"labels": {LABEL_STACK: "docker", LABEL_RUN: self.run_id}}
        if spec.entrypoint is not None:
            kwargs["entrypoint"] = list(spec.entrypoint)
        container.with_kwargs(**kwargs)
        if spec.command is not None:
            container.with_command(list(spec.command))
        self.running[spec.name] = _Running(spec, container, generation)
        self._generations[spec.name] = generation + 1
        container.start()

    def _write_files(self, spec: ContainerSpec) -> None:
        for item in spec.files:
            (self.workdir / "config" / item.host_name).write_text(redact(item.content, self._token))

    def _url(self, running: _Running, port: int) -> str:
        """The host-side URL of a container port (testcontainers resolves remote, DinD and DooD daemons)."""
        host = LOOPBACK if self.publish_ip == LOOPBACK else running.container.get_container_host_ip()
        return f"http://{host}:{running.container.get_exposed_port(port)}"

    def _wait_serving(self, name: str) -> None:
        running = self.running[name]
        wait = running.spec.wait
        found: dict[str, str] = {}

        def observe() -> int:
            state = self._state(running)
            if state.get("Status") in ("exited", "dead"):
                raise ContainerExited(f"{name} exited with code {state.get('ExitCode')} "
                                      f"(OOMKilled={state.get('OOMKilled')}) before it served {wait.path}")
            if "url" not in found:  # the host port is known once the container runs
                found["url"] = self._url(running, wait.port) + wait.path
            return httpx.get(found["url"], timeout=2.0).status_code

        try:
            poll_until(observe, lambda status: status == wait.status,
                       what=f"{name} to serve: GET {wait.path} on container port {wait.port} -> {wait.status}",
                       timeout=wait.timeout, interval=0.25,
                       # ConnectionError: no port mapping yet; TimeoutError: testcontainers saw it stop running
                       # (the next observation reports the exit, with the log tail)
                       retry_on=(httpx.HTTPError, ConnectionError, TimeoutError))
        except (AssertionError, ContainerExited) as exc:
            url = found.get("url", "host port never mapped")
            raise DockerStackError(redact(f"{exc} (url {url})\n--- {name} log tail ---\n{self._log_tail(name)}",
                                          self._token)) from None

    @staticmethod
    def _started(running: _Running) -> bool:
        try:
            running.container.get_wrapped_container()
        except Exception:  # testcontainers: ContainerStartException before start()
            return False
        return True

    def _state(self, running: _Running) -> dict[str, Any]:
        wrapped = running.container.get_wrapped_container()
        wrapped.reload()
        state: dict[str, Any] = wrapped.attrs.get("State") or {}
        return state

    # --- readiness: one canary through the whole pipeline --------------------------------------------------------

    def _canary(self) -> None:
        """One request through Kong with a crafted ``traceparent`` whose trace Kong samples at any rate above 0;
        wait until that trace holds Kong's, coupon's and membership's spans. At rate 0 nothing can be traced: the
        canary then proves only that Kong proxies."""
        trace_id, traceparent = canary_traceparent()
        response = httpx.get(f"{self.gateway_url}{CANARY_PATH}", headers={"traceparent": traceparent}, timeout=10.0)
        if response.status_code != 200:
            raise DockerStackError(f"canary GET {CANARY_PATH} through Kong answered {response.status_code}: "
                                   f"{response.text[:500]}\n--- kong log tail ---\n{self._log_tail('kong')}")
        rate = effective_sampling_rate(self.settings, spec_by_name(self.specs, "kong"))
        if rate <= 0:
            self._say(f"sampling rate {rate}: the canary cannot be traced; it proved only that Kong proxies")
        else:
            try:
                _wait_canary_trace(self.sink, trace_id, self.timeouts.canary)
            except AssertionError as exc:
                tails = "\n".join(f"--- {n} log tail ---\n{self._log_tail(n)}" for n in ("collector", "kong"))
                raise DockerStackError(redact(f"canary trace did not reach the sink: {exc}\n{tails}", self._token)) \
                    from None
            self.canary_trace_id = trace_id
        self.sink.reset()  # the suites start from an empty sink; the canary proved the path

    # --- the Stack protocol --------------------------------------------------------------------------------------

    @property
    def sink(self) -> SinkClient:
        if self._sink is None:
            raise RuntimeError("the sink is not running (the docker stack was not started)")
        return self._sink

    def reconfigure(self, **changes: Any) -> None:
        """Apply changed settings and wait until they are in effect.

        Kong-side (``sampling_rate``, ``kong_plugin_config``): the config is re-derived from kong.yaml and POSTed to
        Kong's Admin API ``/config``; done when Kong's worker logs that the reload was applied.
        ``tracing_sampling_rate`` is kong.conf: Kong's container is replaced (same alias, same host ports).
        Collector-side: the collector container is replaced with the re-derived config (or stays away when
        ``collector_running`` is False).
        """
        unknown = set(changes) - set(StackSettings.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown stack settings {sorted(unknown)}; known: "
                             f"{sorted(StackSettings.__dataclass_fields__)}")
        new = self.settings.with_changes(**changes)
        changed = {key for key in changes if getattr(new, key) != getattr(self.settings, key)}
        if not changed:
            return
        previous, previous_specs = self.settings, self.specs
        self.settings, self.specs = new, container_specs(new)
        try:
            if changed & COLLECTOR_SIDE:
                self._replace("collector", run=self.settings.collector_running)
            if changed & KONG_RESTART:
                self._replace("kong", run=True)
            elif changed & KONG_SIDE:
                self._post_kong_config()
        except BaseException:
            self.settings, self.specs = previous, previous_specs
            raise

    def _post_kong_config(self) -> None:
        item = spec_by_name(self.specs, "kong").file(KONG_DECLARATIVE_PATH)
        (self.workdir / "config" / item.host_name).write_text(item.content)
        kong = self.running["kong"]
        evidence = ReloadEvidence.of(self._kong_error_log())
        admin = self._url(kong, KONG_ADMIN_PORT)
        response = httpx.post(f"{admin}/config", json={"config": item.content}, timeout=self.timeouts.reconfigure)
        if response.status_code != 201:
            raise DockerStackError(f"Kong refused the new declarative config: POST /config answered "
                                   f"{response.status_code}: {response.text[:2000]}")
        workers = _worker_count(spec_by_name(self.specs, "kong").env)
        try:
            poll_until(lambda: evidence.workers_applied(self._kong_error_log()), lambda done: done >= workers,
                       what=f"Kong to log '{RECONFIGURE_DONE}' on all {workers} worker(s) after POST /config",
                       timeout=self.timeouts.reconfigure, retry_on=())
        except KongReloadFailed as exc:
            raise DockerStackError(f"{exc}\n--- kong log tail ---\n{self._log_tail('kong')}") from None

    def _kong_error_log(self) -> str:
        """Kong's error log (stderr; access lines go to stdout and would only make every poll bigger)."""
        raw: bytes = self.running["kong"].container.get_wrapped_container().logs(stdout=False, stderr=True)
        return raw.decode(errors="replace")

    def _replace(self, name: str, *, run: bool) -> None:
        """Remove a container (its log saved first) and, if ``run``, start its successor and wait until it serves."""
        old = self.running.get(name)
        host_ports: dict[int, int] = {}
        if old is not None:
            if self._started(old):
                host_ports = {p.port: int(old.container.get_exposed_port(p.port)) for p in old.spec.ports
                              if p.published and self._state(old).get("Running")}
                self._save_log(name, old)
                old.container.stop()
            del self.running[name]
        if run:
            self._launch(spec_by_name(self.specs, name), self._generations.get(name, 0), host_ports)
            self._wait_serving(name)
            if name == "kong":
                self.gateway_url = self._url(self.running["kong"], KONG_PROXY_PORT)

    def collector_pid(self) -> int | None:
        """The collector's pid when this machine can see it (a local Linux daemon: the container's process is a
        host process), else None. With Docker Desktop or a remote daemon the pid lives in another kernel; then
        :meth:`collector_metrics_url` is the way to watch the collector."""
        running = self.running.get("collector")
        if running is None:
            return None
        try:
            state = self._state(running)
        except Exception:
            return None
        pid = int(state.get("Pid") or 0) if state.get("Running") else 0
        if pid <= 0 or self.publish_ip != LOOPBACK:
            return None
        try:  # the same pid may belong to something else on this host when the daemon runs in a VM
            command = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None
        return pid if command.startswith("otelcol") else None

    def collector_metrics_url(self) -> str | None:
        """The collector's own Prometheus metrics (``service.telemetry``), published to the host."""
        running = self.running.get("collector")
        if running is None:
            return None
        telemetry = next((p.port for p in running.spec.ports if p.purpose == COLLECTOR_TELEMETRY), None)
        if telemetry is None:
            return None
        try:
            return self._url(running, telemetry) + "/metrics"
        except Exception:
            return None

    def collector_state(self) -> str:
        """``running``, ``stopped (reconfigured away)`` or the container's status, for status lines."""
        running = self.running.get("collector")
        if running is None:
            return "stopped (collector_running=False)"
        try:
            return str(self._state(running).get("Status") or "unknown")
        except Exception as exc:
            return f"unknown ({type(exc).__name__})"

    def urls(self) -> dict[str, str]:
        urls: dict[str, str] = {}
        labels = {("kong", KONG_PROXY_PORT): "gateway (Kong proxy)", ("kong", KONG_ADMIN_PORT): "kong admin API",
                  ("kong", KONG_STATUS_PORT): "kong status API (/status, /metrics)", ("sink", SINK_PORT): "sink API"}
        for name, running in self.running.items():
            for port in running.spec.ports:
                if port.published:
                    with contextlib.suppress(Exception):
                        label = labels.get((name, port.port), f"{name} {port.purpose}")
                        urls[label] = self._url(running, port.port)
        return urls

    # --- teardown and diagnostics --------------------------------------------------------------------------------

    def close(self, force: bool = False) -> None:
        """Remove every container and the network, unless kept (``keep=True``, and not a failed bring-up)."""
        if self._closed:
            return
        self._closed = True
        if self.keep and not force:
            self._say(self.kept_message())
            return
        errors: list[str] = []
        for name in reversed(list(self.running)):
            try:
                self.running[name].container.stop()
            except Exception as exc:
                errors.append(f"{name}: {exc!r}")
        self.running.clear()
        if self._network_created:
            try:
                self.network.remove()
            except Exception as exc:
                errors.append(f"network {self.network.name}: {exc!r}")
        if self._sink is not None:
            self._sink.close()
        if errors:
            raise RuntimeError("docker stack teardown was incomplete:\n" + "\n".join(errors))

    def kept_message(self) -> str:
        names = ", ".join(self._container_name(r.spec, r.generation) for r in self.running.values())
        network = self.network.name if self.network is not None else "(none)"
        return (f"kept (--keep): containers {names}; network {network}. Remove them with: docker rm -f "
                f"$(docker ps -aq --filter label={LABEL_RUN}={self.run_id}) && docker network rm {network}")

    def _log_tail(self, name: str, lines: int = 60) -> str:
        running = self.running.get(name)
        if running is None or not self._started(running):
            return f"<{name} not started>"
        try:
            stdout, stderr = running.container.get_logs()
        except Exception as exc:
            return f"<logs of {name} unavailable: {exc!r}>"
        text = (stdout + stderr).decode(errors="replace")
        return redact("\n".join(text.splitlines()[-lines:]), self._token)

    def _save_log(self, name: str, running: _Running) -> Path:
        """The container's whole log (stdout and stderr interleaved, timestamped), token redacted."""
        path = self.workdir / "logs" / f"{self._container_name(running.spec, running.generation)}.log"
        try:
            raw = running.container.get_wrapped_container().logs(stdout=True, stderr=True, timestamps=True)
            path.write_text(redact(raw.decode(errors="replace"), self._token))
        except Exception as exc:
            path.write_text(f"<logs of {name} unavailable: {exc!r}>\n")
        return path

    def diagnose(self, dest: Path) -> Path:
        """Every container's log and state, the derived configs, the sink dump and a summary; token redacted."""
        dest = Path(dest)
        (dest / "logs").mkdir(parents=True, exist_ok=True)
        for name, running in self.running.items():
            if self._started(running):
                self._save_log(name, running)
        for path in sorted((self.workdir / "logs").glob("*.log")):
            (dest / "logs" / path.name).write_text(redact(path.read_text(errors="replace"), self._token))
        (dest / "config").mkdir(exist_ok=True)
        for path in sorted((self.workdir / "config").glob("*")):
            (dest / "config" / path.name).write_text(redact(path.read_text(errors="replace"), self._token))
        (dest / "containers.json").write_text(redact(json.dumps(self._inspect_all(), indent=1), self._token))
        try:
            (dest / "sink-dump.json").write_text(redact(json.dumps(self.sink.dump(), indent=1), self._token))
        except Exception as exc:
            (dest / "sink-dump.error.txt").write_text(f"could not fetch the sink dump: {exc!r}\n")
        (dest / "summary.txt").write_text(redact(self._summary(), self._token))
        return dest

    def _inspect_all(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, running in self.running.items():
            try:
                attrs = running.container.get_wrapped_container().attrs
                out[name] = {"name": attrs.get("Name"), "image": running.spec.image, "state": attrs.get("State"),
                             "ports": (attrs.get("NetworkSettings") or {}).get("Ports"),
                             "env_names": sorted(e.split("=", 1)[0] for e in (attrs.get("Config") or {}).get("Env")
                                                 or [])}
            except Exception as exc:
                out[name] = {"error": repr(exc)}
        return out

    def _summary(self) -> str:
        lines = [f"otelgate docker stack (run {self.run_id}, workdir {self.workdir})", f"settings: {self.settings}",
                 f"kong deployment name (collector attribute): {self.kong_deployment_name}",
                 f"canary trace: {self.canary_trace_id}"]
        if self.bring_up_seconds is not None:
            lines.append(f"bring-up to first green canary: {self.bring_up_seconds:.2f} s")
        lines.append("containers:")
        for name, running in self.running.items():
            lines.append(f"  {name}: {self._container_name(running.spec, running.generation)} ({running.spec.image})")
        lines += summary_tail(self.urls(), lambda: self.sink.stats())
        return "\n".join(lines) + "\n"

    def _timing(self, line: str) -> None:
        append_timing(self.workdir, line)


class KongReloadFailed(Exception):
    """Kong logged that applying a declarative config failed."""


@dataclass(frozen=True)
class ReloadEvidence:
    """How many reloads Kong's error log showed before a ``POST /config``; what came after is the new one."""

    done: int
    failed: int

    @classmethod
    def of(cls, error_log: str) -> ReloadEvidence:
        return cls(error_log.count(RECONFIGURE_DONE), error_log.count(RECONFIGURE_FAILED))

    def workers_applied(self, error_log: str) -> int:
        """Workers that applied a reload since; raises :class:`KongReloadFailed` if one failed."""
        if error_log.count(RECONFIGURE_FAILED) > self.failed:
            failure = [line for line in error_log.splitlines() if RECONFIGURE_FAILED in line][-1]
            raise KongReloadFailed(f"Kong could not apply the new declarative config: {failure.strip()}")
        return error_log.count(RECONFIGURE_DONE) - self.done


def _worker_count(kong_env: Mapping[str, str]) -> int:
    value = kong_env.get("KONG_NGINX_WORKER_PROCESSES", "1")
    if not value.isdigit():
        raise DockerStackError(f"KONG_NGINX_WORKER_PROCESSES={value!r}: reconfigure() needs a fixed worker count")
    return int(value)


def canary_traceparent() -> tuple[str, str]:
    """``(trace_id, traceparent)`` with the trace id's first 8 bytes zero: Kong's ratio sampler reads them as a
    uint64 and samples iff it is below ``rate * 2**64`` (kong/pdk/tracing.lua), so this id is sampled at every rate
    above 0. The flag ``01`` does not force sampling in Kong 3.8+; ``00`` would force it off."""
    tail = secrets.token_hex(8)
    while int(tail, 16) == 0:
        tail = secrets.token_hex(8)
    trace_id = "0" * 16 + tail
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def effective_sampling_rate(settings: StackSettings, kong_spec: ContainerSpec) -> float:
    """The rate Kong samples with: the opentelemetry plugin's ``sampling_rate`` if the config sets one, else
    kong.conf ``tracing_sampling_rate`` (Kong reference 7.1)."""
    doc = yaml.safe_load(kong_spec.file(KONG_DECLARATIVE_PATH).content)
    for plugin in doc.get("plugins") or []:
        if plugin.get("name") == "opentelemetry" and (plugin.get("config") or {}).get("sampling_rate") is not None:
            return float(plugin["config"]["sampling_rate"])
    return float(settings.tracing_sampling_rate)


def _wait_canary_trace(sink: SinkClient, trace_id: str, timeout: float) -> None:
    def services_in_trace() -> set[str]:
        return {str(s.get("service_name")) for s in sink.spans(trace_id=trace_id)}

    poll_until(services_in_trace, lambda seen: {KONG_SERVICE_NAME, "coupon", "membership"} <= seen,
               what=f"spans of {KONG_SERVICE_NAME}, coupon and membership in the canary's trace {trace_id}",
               timeout=timeout, interval=0.2)


class _Testcontainers:
    """The few testcontainers names the stack uses, imported only when a stack starts (an optional extra)."""

    def __init__(self) -> None:
        try:
            from testcontainers.core.config import testcontainers_config
            from testcontainers.core.container import DockerContainer
            from testcontainers.core.network import Network
        except ImportError as exc:
            raise DockerStackError(f"the docker stack needs testcontainers: pip install 'otelgate[docker]' ({exc})") \
                from None
        self.config = testcontainers_config
        self.DockerContainer = DockerContainer
        self.Network = Network


def _testcontainers() -> _Testcontainers:
    return _Testcontainers()


# ------------------------------------------------------------------------------------------------ entry points


def start_from_pytest(pytest_config: pytest.Config) -> DockerStack:
    """The suites' ``stack`` fixture with ``--stack docker`` (``--keep-stack`` keeps the containers)."""
    artifacts = Path(os.environ.get("OTELGATE_ARTIFACTS") or pytest_config.rootpath / "artifacts")
    keep = bool(pytest_config.getoption("keep_stack", default=False))
    return DockerStack.start(StackSettings(), artifacts / "docker-stack", keep=keep)


def _status_line(stack: DockerStack) -> str:
    """What the sink has seen per signal, and the collector container's state (its pid may be in another kernel)."""
    try:
        stats = stack.sink.stats()
    except Exception as exc:
        return f"{time.strftime('%H:%M:%S')} sink unreachable: {exc!r}"
    parts = [f"{name} {stats.get(name, {}).get('requests', 0)} req/{stats.get(name, {}).get('items', 0)} items"
             for name in ("traces", "metrics", "logs")]
    rejected = sum(int(stats.get(name, {}).get("rejected_items", 0)) for name in ("traces", "metrics", "logs"))
    return (f"{time.strftime('%H:%M:%S')} sink: {', '.join(parts)}; {rejected} rejected; "
            f"collector {stack.collector_state()}")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def up(args: argparse.Namespace) -> int:
    """``otelgate up --stack docker``: bring the stack up, print its URLs and status lines until Ctrl-C."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="otelgate-docker-"))
    keep = bool(getattr(args, "keep", False))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    print(f"starting the docker stack (real Kong, the collector image, the sink); logs in {workdir}", flush=True)
    try:
        stack = DockerStack.start(_settings_from_options(args), workdir, keep=keep)
    except KeyboardInterrupt:
        print("interrupted during bring-up; every container started was removed", file=sys.stderr)
        return 130
    except DockerStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"up in {stack.bring_up_seconds:.1f} s (first green canary). URLs:")
        urls = stack.urls()
        width = max(len(name) for name in urls)
        for name, url in urls.items():
            print(f"  {name:<{width}}  {url}")
        print(f"try:  curl -i {stack.gateway_url}{CANARY_PATH}     (Ctrl-C stops everything)", flush=True)
        while True:
            print(_status_line(stack), flush=True)
            time.sleep(args.status_interval)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping the docker stack ...", flush=True)
        stack.close()
    return 0
