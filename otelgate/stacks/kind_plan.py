"""What the kind and external stacks are asked (:class:`KindOptions`), where their per-cluster state lives, and the
plan: every command of a bring-up in order, as ``otelgate up --stack kind|external --dry-run`` prints it, plus the
prerequisites check. Starts nothing."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from otelgate import paths, topology
from otelgate.cluster_topology import PATHS, TOPOLOGY, kind_host_ports, load_yaml_docs
from otelgate.sinkimage import sink_image_tag
from otelgate.stacks import kind_addons as ka
from otelgate.stacks.base import StackOptions, StackSettings, StackStartError
from otelgate.stacks.kube import Runner, Step

DEFAULT_CLUSTER = "otelgate"
KONG_NODEPORT = 30080
SINK_NODEPORT = 30081
CLUSTER_TIMEOUT = 420   # seconds for `kind create cluster` (its own --wait is 120s)

INSTALL_HINTS: dict[str, str] = {
    "docker": "install Docker Engine or Docker Desktop and start it: https://docs.docker.com/get-docker/",
    "kind": "go install sigs.k8s.io/kind@v0.32.0  (or a release binary: https://kind.sigs.k8s.io/docs/user/quick-start/)",
    "kubectl": "https://kubernetes.io/docs/tasks/tools/  (any version within one minor of v1.36)",
    "helm": "Helm >= 3.13 (4.x recommended): https://helm.sh/docs/intro/install/  "
            "or: go install helm.sh/helm/v4/cmd/helm@v4.3.1",
}
KIND_TOOLS = ("docker", "kind", "kubectl", "helm")


@dataclass(frozen=True)
class KindOptions:
    cluster_name: str = DEFAULT_CLUSTER
    keep: bool = False                      # keep the cluster (kind) / everything installed (external)
    kubeconfig: Path | None = None          # external: the user's cluster; kind: <state_dir>/kubeconfig
    sink_image: str | None = None           # external: REQUIRED (a registry the cluster can pull from)
    settings: StackSettings = field(default_factory=StackSettings)
    workdir: Path | None = None             # logs, derived configs, diagnostics of this run
    state_dir: Path | None = None           # per-cluster kubeconfig and token (default ~/.cache/otelgate/...)
    manifests: Path = field(default_factory=paths.manifests_dir)
    checkout: Path | None = paths.CHECKOUT  # holds the sink's Dockerfile (None in an installed wheel)
    external: bool = False

    @property
    def stack_name(self) -> str:
        return "external" if self.external else "kind"

    @property
    def topology(self) -> topology.Topology:
        """The deployment's otelgate.toml (canary route, services, deployment names)."""
        return topology.current(self.manifests)

    @property
    def deployment_name(self) -> str:
        """The collector's ``kong.deployment.name`` on this stack (otelgate.toml [deployment.names])."""
        return self.topology.deployment_name(self.stack_name)

    @classmethod
    def from_stack_options(cls, options: StackOptions, *, external: bool = False) -> KindOptions:
        """From the options every stack takes; ``None`` falls back to the OTELGATE_* environment, then defaults."""
        env = os.environ
        kubeconfig = options.kubeconfig or env.get("OTELGATE_KUBECONFIG")
        return cls(cluster_name=options.cluster_name or env.get("OTELGATE_KIND_CLUSTER") or DEFAULT_CLUSTER,
                   keep=options.keep or env.get("OTELGATE_KEEP_CLUSTER") == "1",
                   kubeconfig=Path(kubeconfig) if kubeconfig else None,
                   sink_image=options.sink_image or env.get("OTELGATE_SINK_IMAGE"),
                   settings=options.settings, workdir=options.workdir,
                   manifests=paths.manifests_dir(options.manifests), external=external)


# --- plan ---------------------------------------------------------------------------------------------------------


def state_dir(options: KindOptions) -> Path:
    """Where otelgate keeps a cluster's private kubeconfig (kind) and generated token: per cluster, so a kept
    cluster is found again with the same token."""
    if options.state_dir is not None:
        return options.state_dir
    if options.external:
        key = hashlib.sha256(str(options.kubeconfig).encode()).hexdigest()[:12]
        return Path.home() / ".cache" / "otelgate" / "external" / key
    return Path.home() / ".cache" / "otelgate" / "kind" / options.cluster_name


def kubeconfig_path(options: KindOptions) -> Path:
    return options.kubeconfig if options.kubeconfig is not None else state_dir(options) / "kubeconfig"


def cluster_config_path(options: KindOptions) -> Path:
    return state_dir(options) / "kind-cluster.yaml"


def render_cluster_config(options: KindOptions) -> str:
    """manifests/kind/cluster.yaml with ``name`` = the cluster's name (pytest-kubernetes names the cluster after the
    config's ``name``: pytest_kubernetes/providers/base.py@0.9.0:80-81)."""
    config = load_yaml_docs(options.manifests / PATHS.kind_cluster)[0]
    config["name"] = options.cluster_name
    return yaml.safe_dump(config, sort_keys=False)


def cluster_steps(options: KindOptions) -> list[Step]:
    """What pytest-kubernetes' kind manager runs (pytest_kubernetes/providers/kind.py@0.9.0:15-22, 39-40)."""
    config = ka.shown(options.manifests / PATHS.kind_cluster)
    return [Step("cluster", ("kind", "create", "cluster", "--wait", "120s", "--config",
                             str(cluster_config_path(options)), "--kubeconfig", str(kubeconfig_path(options))),
                 manifest=PATHS.kind_cluster, timeout=float(CLUSTER_TIMEOUT),
                 note=f"{config} named {options.cluster_name}; pytest-kubernetes' kind manager; a private "
                      f"kubeconfig; with --keep-cluster an existing one is reused (kind export kubeconfig)")]


def sink_image_build_step(options: KindOptions, image: str) -> Step:
    """``--provenance=false``: an image with a provenance attestation does not load into kind under Docker's
    containerd image store (``ctr: content digest ... not found``; kubernetes-sigs/kind#3795, #4236)."""
    if options.checkout is None:
        raise StackStartError("the sink image is built from a checkout's Dockerfile and this otelgate is installed "
                              "from a wheel: build it from the repository and pass --sink-image REF")
    dockerfile = ka.shown(options.checkout / "Dockerfile")
    return Step("sink-image", ("docker", "build", "--provenance=false", "--tag", image, "--file", dockerfile,
                               ka.shown(options.checkout)), manifest="Dockerfile", timeout=900.0)


def image_steps(options: KindOptions, image: str) -> list[Step]:
    return [sink_image_build_step(options, image),
            Step("sink-image", ("kind", "load", "docker-image", image, "--name", options.cluster_name),
                 timeout=300.0, note="pytest-kubernetes' load_image; imagePullPolicy IfNotPresent: never pulled")]


def default_sink_image(options: KindOptions) -> str:
    if options.sink_image:
        return options.sink_image
    if options.checkout is None:
        return "<--sink-image REF (required outside a checkout)>"
    return sink_image_tag(options.checkout)


def context(options: KindOptions, runner: Runner, token: str, image: str, gateway_url: str, sink_url: str,
            kong_config: Path | None = None) -> ka.Context:
    return ka.Context(runner=runner, manifests=options.manifests, token=token, sink_image=image,
                      gateway_url=gateway_url, sink_url=sink_url, deployment_name=options.deployment_name,
                      tracing_sampling_rate=options.settings.tracing_sampling_rate, kong_config_path=kong_config,
                      drop_processors=tuple(options.settings.drop_processors), external=options.external)


def kind_urls(manifests: Path) -> tuple[str, str]:
    """(gateway, sink) URLs on the host, from the kind config's extraPortMappings."""
    ports = kind_host_ports(manifests)
    return f"http://127.0.0.1:{ports[KONG_NODEPORT]}", f"http://127.0.0.1:{ports[SINK_NODEPORT]}"


def canary_services(options: KindOptions) -> tuple[str, ...]:
    """What the canary waits for: Kong and the first service behind it on the canary route (the hop that proves
    Kong's context reaches an instrumented service). The rest of the route's path is reported, not waited on: an
    agent that fails (membership's Go eBPF agent) must not hold the bring-up."""
    return options.topology.canary.service_path[:2]


def addon_lines(options: KindOptions, ctx: ka.Context) -> list[str]:
    graph = ka.addons()
    ka.check_graph(graph)
    return [f"[{step.addon}] {step.render()}" for addon in graph for step in addon.deploy(ctx)]


def plan(options: KindOptions) -> list[str]:
    """Every command of a bring-up, in order, one line each (what ``otelgate up --stack kind --dry-run`` prints)."""
    image = default_sink_image(options)
    gateway, sink = kind_urls(options.manifests)
    ctx = context(options, Runner(kubeconfig=kubeconfig_path(options)), "<generated>", image, gateway, sink)
    steps = cluster_steps(options) + image_steps(options, image)
    header = f"[env] every kubectl and helm command runs with --kubeconfig {kubeconfig_path(options)}"
    canary = options.topology.canary
    return [header, *(f"[{s.addon}] {s.render()}" for s in steps), ownership_line(), *addon_lines(options, ctx),
            f"[ready] each addon is waited on until it serves (rollouts complete, webhook answers, Kong proxy "
            f"answers at {gateway}, sink /healthz at {sink}, the app containers of "
            f"{', '.join(options.topology.demo_services)})",
            "[report] each instrumented pod: injected / not injected / crashed (with its agent's last log lines); "
            "never waited on",
            f"[canary] GET {gateway}{canary.path} with a known traceparent; its trace "
            f"({' -> '.join(canary_services(options))}), a Kong metric and its access log must reach the sink; the "
            f"rest of its path ({' -> '.join(canary.service_path[2:]) or 'none'}) is reported"]


def ownership_line() -> str:
    return (f"[ownership] refuse if a namespace ({', '.join(TOPOLOGY.namespaces)}) or Helm release "
            f"({', '.join(r.name for r in TOPOLOGY.releases)}) exists without the label otelgate.dev/owned-by=otelgate")


def helm_too_old(version: str) -> bool:
    """``helm version --short`` (``v3.19.0+g3d8990f``) older than 3.13, the first with ``--labels`` on install and
    upgrade (helm/helm@v3.13.0 cmd/helm/upgrade.go; v3.12.0 has none), or unreadable."""
    match = re.match(r"v(\d+)\.(\d+)", version)
    return match is None or (int(match[1]), int(match[2])) < (3, 13)


# --- prerequisites --------------------------------------------------------------------------------------------------


def check_prerequisites(tools: Sequence[str] = KIND_TOOLS) -> list[str]:
    """Missing tools (and a Docker daemon that does not answer), each with how to install it. Empty = all there."""
    missing = [f"{tool}: not on PATH; install: {INSTALL_HINTS[tool]}" for tool in tools if shutil.which(tool) is None]
    if "docker" in tools and shutil.which("docker") is not None:
        try:
            info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                                  text=True, timeout=20, check=False)
            if info.returncode != 0 or not info.stdout.strip():
                missing.append("docker: the client is installed but no Docker daemon answers (`docker info` failed: "
                               f"{(info.stderr or '').strip()[:200]}); start Docker")
        except subprocess.TimeoutExpired:
            missing.append("docker: `docker info` did not answer within 20 s; is the daemon running?")
    if "helm" in tools and shutil.which("helm") is not None:
        version = subprocess.run(["helm", "version", "--short"], capture_output=True, text=True, timeout=20,
                                 check=False).stdout.strip()
        if helm_too_old(version):
            missing.append(f"helm: {version or 'no version'} found; otelgate labels its releases with "
                           f"`--labels`, which Helm has since v3.13 ({INSTALL_HINTS['helm']})")
    if "kind" in tools:
        try:
            import pytest_kubernetes  # noqa: F401  (the kind cluster's lifecycle)
        except ImportError:
            missing.append("pytest-kubernetes: not installed; install: pip install 'otelgate[kube]'")
    return missing
