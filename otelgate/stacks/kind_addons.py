"""The cluster side of the kind and external stacks: the commands that put each part in place and the checks that
say it is *serving* (not just created).

Each :class:`Addon` is a node in a small dependency graph (KTF style): ``deploy`` is a list of
:class:`~otelgate.stacks.kube.Step` (the exact helm/kubectl command lines, each with its manifest), ``ready`` is a
non-blocking check returning what it still waits for. Nothing here runs a command by itself:
:class:`~otelgate.stacks.kube.Runner` does, with a timeout each. Where things go is
:mod:`otelgate.cluster_topology`.

Bring-up waits only for what the claims need: the app containers of the demo services Kong routes to (and what they
call), never for an instrumentation agent. How each pod's instrumentation went (injected / not injected / crashed,
with the agent's last log lines) is *reported* by :func:`instrumentation_report`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from otelgate.cluster_topology import (
    OWNER_LABEL,
    PATHS,
    TOKEN_PLACEHOLDER,
    TOPOLOGY,
    Release,
    Topology,
    collector_identity,
    instrumentation_identity,
    load_yaml_docs,
)
from otelgate.stacks.kube import CommandFailed, Runner, Step

INSTRUMENTATION_ANNOTATION = "instrumentation.opentelemetry.io/inject-"
# the Operator's agent containers: init containers opentelemetry-auto-instrumentation-<language>, the Go agent a
# sidecar named opentelemetry-auto-instrumentation (internal/instrumentation/sdk.go@v0.158.0:36-37,
# nodejs.go:15, golang.go:55,81)
AGENT_CONTAINER_PREFIX = "opentelemetry-auto-instrumentation"
LOG_TAIL_LINES = 15


# --- paths as shown and as used ------------------------------------------------------------------------------------


def shown(path: Path) -> str:
    """A path as the plan shows it and the commands use it: relative to the working directory when below it."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:
        return str(path)


@dataclass
class Context:
    """What the addons need to know about this bring-up."""

    runner: Runner
    manifests: Path                        # the manifests folder (paths.manifests_dir)
    token: str
    sink_image: str
    gateway_url: str
    sink_url: str
    deployment_name: str                   # the collector's KONG_DEPLOYMENT_NAME (kong.deployment.name)
    tracing_sampling_rate: float = 1.0
    kong_config_path: Path | None = None   # a derived kong.yaml (reconfigure); None = manifests/kong/kong.yaml
    drop_processors: tuple[str, ...] = ()  # collector fault knob
    external: bool = False                 # existing cluster: ClusterIP services, no kind image loading
    topology: Topology = TOPOLOGY

    def path(self, relative: str) -> Path:
        return self.manifests / relative

    def shown(self, relative: str) -> str:
        return shown(self.path(relative))


# --- rendering (the only places manifests are changed on the way into the cluster) ---------------------------------


def render_with_token(path: Path, token: str) -> str:
    text = path.read_text()
    if TOKEN_PLACEHOLDER not in text:
        raise ValueError(f"{path} has no {TOKEN_PLACEHOLDER} placeholder; refusing to apply a literal token")
    return text.replace(TOKEN_PLACEHOLDER, token)


def render_sink_deployment(path: Path, image: str) -> str:
    docs = load_yaml_docs(path)
    for doc in docs:
        if doc.get("kind") == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["image"] = image
    return yaml.safe_dump_all(docs, sort_keys=False)


def render_as_cluster_ip(path: Path) -> str:
    """A NodePort Service as ClusterIP (the external stack port-forwards instead of using node ports)."""
    docs = load_yaml_docs(path)
    for doc in docs:
        if doc.get("kind") == "Service":
            doc["spec"]["type"] = "ClusterIP"
            for port in doc["spec"].get("ports") or []:
                port.pop("nodePort", None)
    return yaml.safe_dump_all(docs, sort_keys=False)


def collector_resource(manifests: Path, drop: Iterable[str] = (), deployment_name: str | None = None
                       ) -> dict[str, Any]:
    """The OpenTelemetryCollector resource of manifests/otel/collector.yaml, with processors dropped from every
    pipeline (a negative control) and KONG_DEPLOYMENT_NAME set to this stack's value."""
    drop = tuple(drop)
    cr = next(d for d in load_yaml_docs(manifests / PATHS.collector) if d.get("kind") == "OpenTelemetryCollector")
    spec = cr.setdefault("spec", {})
    if drop:
        for pipeline in ((spec.get("config") or {}).get("service") or {}).get("pipelines", {}).values():
            pipeline["processors"] = [p for p in pipeline.get("processors") or [] if p not in drop]
    if deployment_name is not None:
        for env in spec.get("env") or []:
            if env.get("name") == "KONG_DEPLOYMENT_NAME":
                env["value"] = deployment_name
    return cr


def render_collector(manifests: Path, drop: Iterable[str], deployment_name: str) -> str:
    """The whole collector manifest (ServiceAccount, RBAC, resource) with :func:`collector_resource`'s changes."""
    docs = [collector_resource(manifests, drop, deployment_name) if d.get("kind") == "OpenTelemetryCollector" else d
            for d in load_yaml_docs(manifests / PATHS.collector)]
    return yaml.safe_dump_all(docs, sort_keys=False)


def manifest_deployment_name(manifests: Path) -> str | None:
    for env in (collector_resource(manifests).get("spec") or {}).get("env") or []:
        if env.get("name") == "KONG_DEPLOYMENT_NAME" and "value" in env:
            return str(env["value"])
    return None


# --- readiness -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readiness:
    ready: bool
    waiting_for: str = ""


READY = Readiness(True)


def deployments_ready(runner: Runner, namespace: str, selector: str | None = None,
                      names: Iterable[str] = (), minimum: int = 1) -> Readiness:
    """Every matching Deployment rolled out: observed its generation, all replicas updated and available."""
    argv = ["kubectl", "get", "deployments", "-n", namespace]
    if selector:
        argv += ["-l", selector]
    items = runner.json(argv).get("items") or []
    wanted = set(names)
    found = {item["metadata"]["name"] for item in items}
    if missing := wanted - found:
        return Readiness(False, f"deployments {sorted(missing)} in {namespace} do not exist yet")
    if len(items) < minimum:
        return Readiness(False, f"{len(items)} of at least {minimum} deployments ({selector or 'any'}) in "
                                f"{namespace} exist yet")
    for item in items:
        if wanted and item["metadata"]["name"] not in wanted:
            continue
        status, spec = item.get("status") or {}, item.get("spec") or {}
        want = int(spec.get("replicas", 1))
        if int(status.get("observedGeneration", 0)) < int(item["metadata"].get("generation", 0)):
            return Readiness(False, f"deployment {namespace}/{item['metadata']['name']} rollout not observed yet")
        for key in ("updatedReplicas", "availableReplicas", "readyReplicas"):
            if int(status.get(key, 0)) < want:
                return Readiness(False, f"deployment {namespace}/{item['metadata']['name']}: {key} "
                                        f"{status.get(key, 0)}/{want}")
        if int(status.get("replicas", 0)) > want:
            return Readiness(False, f"deployment {namespace}/{item['metadata']['name']}: old pods still terminating")
    return READY


def app_containers_ready(runner: Runner, namespace: str, services: Sequence[str]) -> Readiness:
    """Each service has a running pod whose APP container (named like the service) is ready. Not the pod's Ready
    condition: that also counts an instrumentation agent sidecar, which is optional."""
    pods = runner.json(["kubectl", "get", "pods", "-n", namespace, "-l",
                        f"app in ({','.join(services)})"]).get("items") or []
    for service in services:
        statuses = [status for pod in pods if (pod["metadata"].get("labels") or {}).get("app") == service
                    and not pod["metadata"].get("deletionTimestamp")
                    for status in (pod.get("status") or {}).get("containerStatuses") or []
                    if status.get("name") == service]
        if not statuses:
            return Readiness(False, f"no pod of {namespace}/{service} runs its {service} container yet")
        if not any(status.get("ready") for status in statuses):
            state = statuses[0].get("state") or {}
            reason = next((v.get("reason") for v in state.values() if isinstance(v, dict) and v.get("reason")), "")
            return Readiness(False, f"container {service} of {namespace}/{service} not ready"
                                    + (f" ({reason})" if reason else ""))
    return READY


def service_has_endpoints(runner: Runner, namespace: str, name: str) -> Readiness:
    slices = runner.json(["kubectl", "get", "endpointslices", "-n", namespace,
                          "-l", f"kubernetes.io/service-name={name}"]).get("items") or []
    for item in slices:
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready"):
                return READY
    return Readiness(False, f"service {namespace}/{name} has no ready endpoint")


def http_status(url: str, timeout: float = 3.0) -> tuple[int, dict[str, str]]:
    response = httpx.get(url, timeout=timeout)
    return response.status_code, {k.lower(): v for k, v in response.headers.items()}


# --- instrumentation: reported, never waited on -------------------------------------------------------------------


@dataclass(frozen=True)
class InstrumentationStatus:
    pod: str
    language: str
    state: str              # "injected", "not injected", "crashed"
    detail: str = ""
    log_tail: str = ""

    def line(self) -> str:
        text = f"{self.pod} ({self.language}): {self.state}" + (f" — {self.detail}" if self.detail else "")
        if self.log_tail:
            text += "\n      " + "\n      ".join(self.log_tail.splitlines()[-LOG_TAIL_LINES:])
        return text


def instrumentation_report(runner: Runner, namespace: str) -> list[InstrumentationStatus]:
    """For every pod that asks for injection: did the Operator inject its agent, and did the agent crash? A pod
    created before the webhook served, or a language the cluster's Operator does not enable (Go is off unless the
    Operator runs with --enable-go-instrumentation), is "not injected"; an agent container that restarted or exited
    with an error is "crashed", with its last log lines."""
    pods = runner.json(["kubectl", "get", "pods", "-n", namespace]).get("items") or []
    report = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        languages = [key.removeprefix(INSTRUMENTATION_ANNOTATION) for key in meta.get("annotations") or {}
                     if key.startswith(INSTRUMENTATION_ANNOTATION)]
        if not languages or meta.get("deletionTimestamp"):
            continue
        report.append(_pod_instrumentation(runner, namespace, pod, languages[0]))
    return report


def _pod_instrumentation(runner: Runner, namespace: str, pod: dict[str, Any], language: str) -> InstrumentationStatus:
    name = pod["metadata"]["name"]
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    agents = [c["name"] for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
              if str(c.get("name", "")).startswith(AGENT_CONTAINER_PREFIX)]
    if not agents:
        return InstrumentationStatus(name, language, "not injected",
                                     "no agent container: the Operator's webhook did not inject this pod (created "
                                     "before it served, or the Operator does not enable this language)")
    statuses = {s.get("name"): s for s in (status.get("initContainerStatuses") or [])
                + (status.get("containerStatuses") or [])}
    app = str((pod["metadata"].get("labels") or {}).get("app", ""))
    for container in [*agents, app]:
        state = statuses.get(container) or {}
        crash = _crash(state)
        if crash:
            previous = ["--previous"] if int(state.get("restartCount", 0)) > 0 else []
            try:
                tail = runner.run(["kubectl", "logs", name, "-n", namespace, "-c", container,
                                   f"--tail={LOG_TAIL_LINES}", *previous], timeout=30, check=False)
                log = (tail.stdout or tail.stderr).strip()
            except CommandFailed as exc:
                log = str(exc)
            return InstrumentationStatus(name, language, "crashed", f"container {container}: {crash}",
                                         runner.redact(log))
    return InstrumentationStatus(name, language, "injected", f"agent {', '.join(agents)}")


def _crash(state: dict[str, Any]) -> str:
    waiting = (state.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in ("CrashLoopBackOff", "Error", "RunContainerError"):
        return f"{waiting['reason']} after {state.get('restartCount', 0)} restarts"
    for key in ("state", "lastState"):
        terminated = (state.get(key) or {}).get("terminated") or {}
        if terminated and int(terminated.get("exitCode", 0)) != 0:
            return f"exited with code {terminated.get('exitCode')} ({terminated.get('reason', '')})"
    if int(state.get("restartCount", 0)) > 0:
        return f"restarted {state['restartCount']} times"
    return ""


# --- the addons ----------------------------------------------------------------------------------------------------


@dataclass
class Addon:
    name: str
    depends_on: tuple[str, ...]
    deploy: Callable[[Context], list[Step]]
    ready: Callable[[Context], Readiness]
    timeout: float = 300.0
    release: Release | None = None          # the Helm release it installs (ownership, close)
    namespaces: Callable[[Topology], tuple[str, ...]] = lambda topology: ()   # otelgate's, for ownership


def helm_install(ctx: Context, release: Release, values: str, extra: Sequence[str] = ()) -> Step:
    chart = ctx.topology.charts[release.chart]
    return Step(release.addon, ("helm", "upgrade", "--install", release.name, chart.name, "--repo", chart.repo_url,
                                "--version", chart.version, "--namespace", release.namespace,
                                "--values", ctx.shown(values), *extra, "--labels", OWNER_LABEL,
                                "--wait", "--timeout", "10m"),
                manifest=values, timeout=660.0)


def helm_uninstall(release: Release) -> Step:
    return Step(release.addon, ("helm", "uninstall", release.name, "--namespace", release.namespace, "--wait",
                                "--timeout", "5m"), timeout=330.0)


def _apply(ctx: Context, addon: str, manifest: str, timeout: float = 60.0) -> Step:
    return Step(addon, ("kubectl", "apply", "-f", ctx.shown(manifest)), manifest=manifest, timeout=timeout)


def _apply_rendered(ctx: Context, addon: str, manifest: str, render: Callable[[], str], note: str) -> Step:
    return Step(addon, ("kubectl", "apply", "-f", "-"), manifest=manifest, stdin_from=ctx.shown(manifest), note=note,
                timeout=60.0, render_stdin=render)


# sink

def _sink_deploy(ctx: Context) -> list[Step]:
    p = PATHS
    service = _apply(ctx, "sink", p.sink_service)
    if ctx.external:
        service = _apply_rendered(ctx, "sink", p.sink_service,
                                  lambda: render_as_cluster_ip(ctx.path(p.sink_service)),
                                  "as ClusterIP (port-forwarded)")
    return [
        _apply(ctx, "sink", p.sink_namespace),
        _apply_rendered(ctx, "sink", p.sink_secret, lambda: render_with_token(ctx.path(p.sink_secret), ctx.token),
                        "token generated for this cluster, redacted"),
        _apply_rendered(ctx, "sink", p.sink_deployment,
                        lambda: render_sink_deployment(ctx.path(p.sink_deployment), ctx.sink_image),
                        f"image {ctx.sink_image}"),
        service,
    ]


def _sink_ready(ctx: Context) -> Readiness:
    state = deployments_ready(ctx.runner, ctx.topology.sink_namespace, names=[ctx.topology.sink_name])
    if not state.ready:
        return state
    try:
        status, _ = http_status(f"{ctx.sink_url}/healthz")
    except httpx.HTTPError as exc:
        return Readiness(False, f"sink /healthz at {ctx.sink_url} unreachable: {exc!r}")
    return READY if status == 200 else Readiness(False, f"sink /healthz answered {status}")


# cert-manager and the OpenTelemetry Operator

def _cert_manager_ready(ctx: Context) -> Readiness:
    release = ctx.topology.cert_manager
    # controller, webhook and cainjector, whatever the chart names them
    return deployments_ready(ctx.runner, release.namespace, selector=f"app.kubernetes.io/instance={release.name}",
                             minimum=3)


def _operator_ready(ctx: Context) -> Readiness:
    release = ctx.topology.operator
    state = deployments_ready(ctx.runner, release.namespace, selector=f"app.kubernetes.io/instance={release.name}")
    if not state.ready:
        return state
    # "serving": the Operator's validating webhook answers a server-side dry run of our Instrumentation, placed in
    # the Operator's own namespace (the demo namespace is created later, by the collector addon)
    if not ctx.runner.ok(["kubectl", "apply", "--dry-run=server", "-f", "-"],
                         stdin=instrumentation_probe(ctx.manifests, release.namespace)):
        return Readiness(False, "the Operator's admission webhook does not answer yet (server-side dry run failed)")
    return READY


def instrumentation_probe(manifests: Path, namespace: str) -> str:
    """The Instrumentation resource moved to ``namespace`` (one that exists), for the webhook's dry run."""
    doc = next(d for d in load_yaml_docs(manifests / PATHS.instrumentation) if d.get("kind") == "Instrumentation")
    doc.setdefault("metadata", {})["namespace"] = namespace
    return yaml.safe_dump(doc, sort_keys=False)


# the collector resource (+ its RBAC and the exporter's Secret)

def collector_apply_step(ctx: Context) -> Step:
    note = f"KONG_DEPLOYMENT_NAME={ctx.deployment_name}"
    if ctx.drop_processors:
        note += f", without processors {', '.join(ctx.drop_processors)}"
    return _apply_rendered(ctx, "collector", PATHS.collector,
                           lambda: render_collector(ctx.manifests, ctx.drop_processors, ctx.deployment_name), note)


def secret_apply_step(ctx: Context) -> Step:
    return _apply_rendered(ctx, "collector", PATHS.dynatrace_secret,
                           lambda: render_with_token(ctx.path(PATHS.dynatrace_secret), ctx.token),
                           "same token as the sink, redacted")


def _collector_deploy(ctx: Context) -> list[Step]:
    return [_apply(ctx, "collector", PATHS.collector_namespaces), secret_apply_step(ctx), collector_apply_step(ctx)]


def _collector_ready(ctx: Context) -> Readiness:
    name, namespace = collector_identity(ctx.manifests)
    state = deployments_ready(ctx.runner, namespace, names=[f"{name}-collector"])
    if not state.ready:
        return state
    return service_has_endpoints(ctx.runner, namespace, f"{name}-collector")


def _instrumentation_ready(ctx: Context) -> Readiness:
    name, namespace = instrumentation_identity(ctx.manifests)
    if ctx.runner.ok(["kubectl", "get", "instrumentations.opentelemetry.io", name, "-n", namespace]):
        return READY
    return Readiness(False, f"Instrumentation {namespace}/{name} not found")


# Kong

def kong_helm_step(ctx: Context) -> Step:
    config = shown(ctx.kong_config_path) if ctx.kong_config_path is not None else ctx.shown(PATHS.kong_config)
    extra = ["--set-file", f"dblessConfig.config={config}",
             "--set-string", f"env.tracing_sampling_rate={float(ctx.tracing_sampling_rate)!r}"]
    if ctx.external:
        extra += ["--set", "proxy.type=ClusterIP"]
    step = helm_install(ctx, ctx.topology.kong, PATHS.kong_values, extra)
    return Step(step.addon, step.argv, manifest=f"{PATHS.kong_values} + {config}", timeout=step.timeout)


def kong_ready(ctx: Context) -> Readiness:
    release = ctx.topology.kong
    state = deployments_ready(ctx.runner, release.namespace, selector=f"app.kubernetes.io/instance={release.name}")
    if not state.ready:
        return state
    # "serving": Kong itself answers on the proxy (a path no route has -> Kong's own 404)
    try:
        status, headers = http_status(f"{ctx.gateway_url}/__otelgate_readiness_probe")
    except httpx.HTTPError as exc:
        return Readiness(False, f"Kong proxy at {ctx.gateway_url} unreachable: {exc!r}")
    if not headers.get("server", "").lower().startswith("kong"):
        return Readiness(False, f"{ctx.gateway_url} answered {status} but not as Kong "
                                f"(Server: {headers.get('server')})")
    return READY


# the demo app

def _app_ready(ctx: Context) -> Readiness:
    """The services the claims need to SERVE (otelgate.toml [services] demo: those Kong routes to and what they
    call); their instrumentation does not gate (the canary checks what the claims need)."""
    from otelgate import topology

    return app_containers_ready(ctx.runner, ctx.topology.app_namespace,
                                topology.current(ctx.manifests).demo_services)


def addons(t: Topology = TOPOLOGY) -> list[Addon]:
    """The graph, in an order that satisfies it (also the order of the plan)."""
    return [
        Addon("sink", (), _sink_deploy, _sink_ready, timeout=180.0,
              namespaces=lambda t: (t.sink_namespace,)),
        Addon("cert-manager", (),
              lambda ctx: [_apply(ctx, "cert-manager", PATHS.cert_manager_namespace),
                           helm_install(ctx, ctx.topology.cert_manager, PATHS.cert_manager_values)],
              _cert_manager_ready, release=t.cert_manager,
              namespaces=lambda t: (t.cert_manager.namespace,)),
        Addon("otel-operator", ("cert-manager",),
              lambda ctx: [_apply(ctx, "otel-operator", PATHS.operator_namespace),
                           helm_install(ctx, ctx.topology.operator, PATHS.operator_values)],
              _operator_ready, release=t.operator, namespaces=lambda t: (t.operator.namespace,)),
        Addon("collector", ("otel-operator", "sink"), _collector_deploy, _collector_ready,
              namespaces=lambda t: (t.collector_namespace, t.kong.namespace, t.app_namespace)),
        Addon("instrumentation", ("otel-operator", "collector"),
              lambda ctx: [_apply(ctx, "instrumentation", PATHS.instrumentation)], _instrumentation_ready,
              timeout=60.0),
        Addon("kong", ("collector",), lambda ctx: [kong_helm_step(ctx)], kong_ready, release=t.kong),
        Addon("app", ("instrumentation", "kong"), lambda ctx: [_apply(ctx, "app", PATHS.app, timeout=120.0)],
              _app_ready, timeout=600.0),
    ]


def check_graph(graph: Sequence[Addon]) -> None:
    """Every dependency exists and comes earlier (KTF's "missing X (needed by Y)")."""
    seen: set[str] = set()
    names = {addon.name for addon in graph}
    for addon in graph:
        for dependency in addon.depends_on:
            if dependency not in names:
                raise ValueError(f"missing {dependency} (needed by {addon.name})")
            if dependency not in seen:
                raise ValueError(f"{dependency} must come before {addon.name}")
        seen.add(addon.name)


def addon(name: str) -> Addon:
    return next(a for a in addons() if a.name == name)


def wait_ready(addon: Addon, ctx: Context, *, interval: float = 2.0, timeout: float | None = None) -> float:
    """Poll ``addon.ready`` until it holds; return the seconds it took. The timeout names what it still waited for."""
    from otelgate.waiting import poll_until

    start = time.monotonic()
    poll_until(lambda: addon.ready(ctx), lambda state: state.ready, what=f"addon {addon.name} to be ready (serving)",
               timeout=addon.timeout if timeout is None else timeout, interval=interval,
               retry_on=(CommandFailed, httpx.HTTPError, ValueError))
    return time.monotonic() - start
