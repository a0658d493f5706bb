"""The cluster side of the kind and external stacks: where everything goes, the commands that put it there, and the
checks that say it is *serving* (not just created).

One :class:`Topology` names every namespace, release and chart pin; ``otelgate lint`` reads the same object, so the
cross-reference checks and the deployment can never disagree. Each :class:`Addon` is a node in a small dependency
graph (KTF style): ``deploy`` is a list of :class:`Step` (the exact kind/helm/kubectl/docker command lines, each with
its manifest), ``ready`` is a non-blocking check returning what it still waits for, ``diagnose`` writes files, and
``delete`` is a list of steps again. Nothing here runs a command by itself: :class:`Runner` does, with a timeout each.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
TOKEN_PLACEHOLDER = "__DT_API_TOKEN__"
REDACTED = "<redacted>"


@dataclass(frozen=True)
class Chart:
    """A pinned Helm chart, installed with ``--repo`` so no local ``helm repo add`` state is needed."""

    repo_url: str
    name: str
    version: str


@dataclass(frozen=True)
class Topology:
    """Where each part of the pipeline lives in the cluster. Read by the stacks AND by ``otelgate lint``."""

    cert_manager_namespace: str = "cert-manager"
    cert_manager_release: str = "cert-manager"
    operator_namespace: str = "opentelemetry-operator-system"
    operator_release: str = "otel-operator"
    kong_namespace: str = "kong"
    kong_release: str = "kong"          # chart kong/kong: fullname <release>-kong, proxy Service <release>-kong-proxy
    kong_chart_name: str = "kong"       # app.kubernetes.io/name on Kong's pods (chart name; values set no nameOverride)
    app_namespace: str = "default"      # kong.yaml's upstreams are <svc>.default.svc.cluster.local
    sink_namespace: str = "otelgate"
    sink_name: str = "otelgate-sink"
    charts: dict[str, Chart] = field(default_factory=lambda: {
        "cert-manager": Chart("https://charts.jetstack.io", "cert-manager", "v1.21.1"),
        "otel-operator": Chart("https://open-telemetry.github.io/opentelemetry-helm-charts",
                               "opentelemetry-operator", "0.122.0"),
        "kong": Chart("https://charts.konghq.com", "kong", "3.4.1"),
    })

    @property
    def kong_proxy_service(self) -> str:
        return f"{self.kong_release}-kong-proxy"

    def kong_pod_labels(self, values: dict[str, Any]) -> dict[str, str]:
        """The labels the Kong chart (3.4.x ``kong.selectorLabels`` + ``podLabels``) puts on Kong's pods."""
        labels = {
            "app.kubernetes.io/name": str(values.get("nameOverride") or self.kong_chart_name),
            "app.kubernetes.io/component": "app",
            "app.kubernetes.io/instance": self.kong_release,
        }
        labels.update({str(k): str(v) for k, v in (values.get("podLabels") or {}).items()})
        return labels


TOPOLOGY = Topology()


@dataclass(frozen=True)
class Paths:
    """The manifest files, relative to the repository (shown in the plan as written here)."""

    kind_cluster: str = "manifests/kind/cluster.yaml"
    cert_manager_values: str = "manifests/cert-manager/values.yaml"
    operator_values: str = "manifests/otel/operator-values.yaml"
    collector: str = "manifests/otel/collector.yaml"
    collector_namespaces: str = "manifests/otel/namespaces.yaml"
    dynatrace_secret: str = "manifests/otel/dynatrace-secret.yaml"
    instrumentation: str = "manifests/otel/instrumentation.yaml"
    kong_values: str = "manifests/kong/values.yaml"
    kong_config: str = "manifests/kong/kong.yaml"
    app: str = "manifests/app/simple-demo.yaml"
    sink_namespace: str = "manifests/sink/namespace.yaml"
    sink_secret: str = "manifests/sink/secret.yaml"
    sink_deployment: str = "manifests/sink/deployment.yaml"
    sink_service: str = "manifests/sink/service.yaml"
    dockerfile: str = "Dockerfile"


PATHS = Paths()


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def collector_identity(root: Path = REPO_ROOT) -> tuple[str, str]:
    """(name, namespace) of the OpenTelemetryCollector resource in manifests/otel/collector.yaml."""
    for doc in load_yaml_docs(root / PATHS.collector):
        if doc.get("kind") == "OpenTelemetryCollector":
            meta = doc.get("metadata") or {}
            return str(meta.get("name")), str(meta.get("namespace") or "default")
    raise ValueError(f"{PATHS.collector} holds no OpenTelemetryCollector resource")


def instrumentation_identity(root: Path = REPO_ROOT) -> tuple[str, str]:
    for doc in load_yaml_docs(root / PATHS.instrumentation):
        if doc.get("kind") == "Instrumentation":
            meta = doc.get("metadata") or {}
            return str(meta.get("name")), str(meta.get("namespace") or "default")
    raise ValueError(f"{PATHS.instrumentation} holds no Instrumentation resource")


def kind_host_ports(root: Path = REPO_ROOT) -> dict[int, int]:
    """containerPort (NodePort) -> hostPort from the kind cluster config."""
    cluster = load_yaml_docs(root / PATHS.kind_cluster)[0]
    ports: dict[int, int] = {}
    for node in cluster.get("nodes") or []:
        for mapping in node.get("extraPortMappings") or []:
            ports[int(mapping["containerPort"])] = int(mapping["hostPort"])
    return ports


# --- commands ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One command of a bring-up or teardown, as a person would type it.

    ``stdin_from`` names the manifest whose *rendered* text (token or image substituted) goes to stdin; the rendered
    text itself never appears in :meth:`render`, so a plan can be printed without leaking the token.
    """

    addon: str
    argv: tuple[str, ...]
    manifest: str | None = None
    timeout: float = 120.0
    stdin_from: str | None = None
    note: str = ""
    render_stdin: Callable[[], str] | None = field(default=None, compare=False, repr=False)

    def render(self) -> str:
        line = shlex.join(self.argv)
        if self.stdin_from:
            line += f" < {self.stdin_from}"
        if self.note:
            line += f"    # {self.note}"
        return line


class CommandFailed(RuntimeError):
    pass


@dataclass
class Runner:
    """Runs kind/helm/kubectl/docker with a timeout each; redacts the token from everything it reports."""

    kubeconfig: Path | None = None
    secrets: tuple[str, ...] = ()
    log: Callable[[str], None] = print
    cwd: Path = REPO_ROOT

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    def with_kubeconfig(self, argv: Sequence[str]) -> list[str]:
        argv = list(argv)
        if self.kubeconfig is not None and argv and argv[0] in ("kubectl", "helm"):
            argv[1:1] = ["--kubeconfig", str(self.kubeconfig)]
        return argv

    def run(self, argv: Sequence[str], *, timeout: float, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        full = self.with_kubeconfig(argv)
        try:
            result = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=timeout,
                                    cwd=self.cwd, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(f"timed out after {timeout:.0f}s: {self.redact(shlex.join(full))}\n"
                                f"{self.redact(_text(exc.stdout))[-2000:]}{self.redact(_text(exc.stderr))[-2000:]}"
                                ) from None
        except FileNotFoundError as exc:
            raise CommandFailed(f"{full[0]} is not installed or not on PATH ({exc}); "
                                f"`otelgate up --stack kind --check-prerequisites` says how to install it") from None
        if check and result.returncode != 0:
            raise CommandFailed(f"exit {result.returncode}: {self.redact(shlex.join(full))}\n"
                                f"{self.redact(result.stderr or result.stdout)[-4000:]}")
        return result

    def run_step(self, step: Step) -> subprocess.CompletedProcess[str]:
        stdin = step.render_stdin() if step.render_stdin is not None else None
        return self.run(step.argv, timeout=step.timeout, stdin=stdin)

    def json(self, argv: Sequence[str], timeout: float = 30.0) -> Any:
        return json.loads(self.run([*argv, "-o", "json"], timeout=timeout).stdout or "{}")

    def ok(self, argv: Sequence[str], timeout: float = 30.0, stdin: str | None = None) -> bool:
        try:
            return self.run(argv, timeout=timeout, stdin=stdin, check=False).returncode == 0
        except CommandFailed:
            return False


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


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


def sink_image_tag(root: Path = REPO_ROOT) -> str:
    """``otelgate-sink:<version>-<hash of what goes into the image>``: a rebuilt image always gets a new tag, so a
    kept cluster never runs a stale sink under a reused name (and nothing relies on :latest)."""
    digest = hashlib.sha256()
    files = [root / "Dockerfile", root / "pyproject.toml",
             *sorted(p for p in (root / "otelgate").rglob("*") if p.is_file() and "__pycache__" not in p.parts)]
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    version = str(yaml.safe_load(_pyproject_version_line(root)) or "0")
    return f"otelgate-sink:{version}-{digest.hexdigest()[:12]}"


def _pyproject_version_line(root: Path) -> str:
    for line in (root / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip()
    return "0"


# --- readiness -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readiness:
    ready: bool
    waiting_for: str = ""


READY = Readiness(True)


def deployments_ready(runner: Runner, namespace: str, selector: str | None = None,
                      names: Iterable[str] = ()) -> Readiness:
    """Every matching Deployment rolled out: observed its generation, all replicas updated and available."""
    argv = ["kubectl", "get", "deployments", "-n", namespace]
    if selector:
        argv += ["-l", selector]
    items = runner.json(argv).get("items") or []
    wanted = set(names)
    found = {item["metadata"]["name"] for item in items}
    if missing := wanted - found:
        return Readiness(False, f"deployments {sorted(missing)} in {namespace} do not exist yet")
    if not items:
        return Readiness(False, f"no deployments ({selector or 'any'}) in {namespace} yet")
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


def pods_instrumented(runner: Runner, namespace: str, selector: str) -> Readiness:
    """Pods that ask for injection got it (the Operator's webhook ran when they were created): some container or init
    container carries OTEL_SERVICE_NAME. A pod created before the webhook served is not instrumented and never will be
    until it is recreated — this says so instead of letting a suite time out on missing spans."""
    pods = runner.json(["kubectl", "get", "pods", "-n", namespace, "-l", selector]).get("items") or []
    for pod in pods:
        annotations = pod["metadata"].get("annotations") or {}
        if not any(key.startswith("instrumentation.opentelemetry.io/inject-") for key in annotations):
            continue
        spec = pod.get("spec") or {}
        containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
        if not any(env.get("name") == "OTEL_SERVICE_NAME" for c in containers for env in c.get("env") or []):
            return Readiness(False, f"pod {namespace}/{pod['metadata']['name']} was not instrumented by the Operator "
                                    f"(created before its webhook served?); `kubectl rollout restart` recreates it")
    return READY


# --- the addons ----------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What the addons need to know about this bring-up."""

    runner: Runner
    root: Path
    token: str
    sink_image: str
    gateway_url: str
    sink_url: str
    tracing_sampling_rate: float = 1.0
    kong_config_path: Path | None = None   # a derived kong.yaml (reconfigure); None = manifests/kong/kong.yaml
    external: bool = False                 # existing cluster: ClusterIP services, no kind image loading
    topology: Topology = TOPOLOGY

    def path(self, relative: str) -> Path:
        return self.root / relative


@dataclass
class Addon:
    name: str
    depends_on: tuple[str, ...]
    deploy: Callable[[Context], list[Step]]
    ready: Callable[[Context], Readiness]
    delete: Callable[[Context], list[Step]]
    timeout: float = 300.0
    diagnose_namespaces: Callable[[Context], tuple[str, ...]] = lambda ctx: ()


def _helm_install(ctx: Context, addon: str, release: str, namespace: str, chart_key: str,
                  values: str, extra: Sequence[str] = ()) -> Step:
    chart = ctx.topology.charts[chart_key]
    return Step(addon, ("helm", "upgrade", "--install", release, chart.name, "--repo", chart.repo_url,
                        "--version", chart.version, "--namespace", namespace, "--create-namespace",
                        "--values", values, *extra, "--wait", "--timeout", "10m"),
                manifest=values, timeout=660.0)


def _helm_uninstall(addon: str, release: str, namespace: str) -> Step:
    return Step(addon, ("helm", "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "5m"),
                timeout=330.0)


def _apply(addon: str, manifest: str, timeout: float = 60.0) -> Step:
    return Step(addon, ("kubectl", "apply", "-f", manifest), manifest=manifest, timeout=timeout)


def _apply_rendered(addon: str, manifest: str, render: Callable[[], str], note: str) -> Step:
    return Step(addon, ("kubectl", "apply", "-f", "-"), manifest=manifest, stdin_from=manifest, note=note,
                timeout=60.0, render_stdin=render)


def _delete(addon: str, manifest: str) -> Step:
    return Step(addon, ("kubectl", "delete", "--ignore-not-found", "--wait", "--timeout", "120s", "-f", manifest),
                manifest=manifest, timeout=150.0)


# sink

def _sink_deploy(ctx: Context) -> list[Step]:
    p = PATHS
    service = _apply("sink", p.sink_service)
    if ctx.external:
        service = _apply_rendered("sink", p.sink_service, lambda: render_as_cluster_ip(ctx.path(p.sink_service)),
                                  "as ClusterIP (port-forwarded)")
    return [
        _apply("sink", p.sink_namespace),
        _apply_rendered("sink", p.sink_secret, lambda: render_with_token(ctx.path(p.sink_secret), ctx.token),
                        "token generated for this cluster, redacted"),
        _apply_rendered("sink", p.sink_deployment,
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


def _sink_delete(ctx: Context) -> list[Step]:
    return [_delete("sink", PATHS.sink_namespace)]


# cert-manager

def _cert_manager_deploy(ctx: Context) -> list[Step]:
    t = ctx.topology
    return [_helm_install(ctx, "cert-manager", t.cert_manager_release, t.cert_manager_namespace, "cert-manager",
                          PATHS.cert_manager_values)]


def _cert_manager_ready(ctx: Context) -> Readiness:
    return deployments_ready(ctx.runner, ctx.topology.cert_manager_namespace,
                             names=["cert-manager", "cert-manager-webhook", "cert-manager-cainjector"])


# the OpenTelemetry Operator

def _operator_deploy(ctx: Context) -> list[Step]:
    t = ctx.topology
    return [_helm_install(ctx, "otel-operator", t.operator_release, t.operator_namespace, "otel-operator",
                          PATHS.operator_values)]


def _operator_ready(ctx: Context) -> Readiness:
    t = ctx.topology
    state = deployments_ready(ctx.runner, t.operator_namespace,
                              selector=f"app.kubernetes.io/instance={t.operator_release}")
    if not state.ready:
        return state
    # "serving": the Operator's validating webhook answers a server-side dry run of our Instrumentation
    instrumentation = ctx.path(PATHS.instrumentation).read_text()
    if not ctx.runner.ok(["kubectl", "apply", "--dry-run=server", "-f", "-"], stdin=instrumentation):
        return Readiness(False, "the Operator's admission webhook does not answer yet (server-side dry run failed)")
    return READY


# the collector resource (+ its RBAC and the exporter's Secret)

def _collector_deploy(ctx: Context) -> list[Step]:
    p = PATHS
    return [
        _apply("collector", p.collector_namespaces),
        _apply_rendered("collector", p.dynatrace_secret,
                        lambda: render_with_token(ctx.path(p.dynatrace_secret), ctx.token),
                        "same token as the sink, redacted"),
        _apply("collector", p.collector),
    ]


def _collector_ready(ctx: Context) -> Readiness:
    name, namespace = collector_identity(ctx.root)
    state = deployments_ready(ctx.runner, namespace, names=[f"{name}-collector"])
    if not state.ready:
        return state
    return service_has_endpoints(ctx.runner, namespace, f"{name}-collector")


def _collector_delete(ctx: Context) -> list[Step]:
    p = PATHS
    # the namespaces go last (kong's also holds the collector's Role; Kong's own release is gone by then)
    return [_delete("collector", p.collector), _delete("collector", p.dynatrace_secret),
            _delete("collector", p.collector_namespaces)]


# the Instrumentation resource

def _instrumentation_ready(ctx: Context) -> Readiness:
    name, namespace = instrumentation_identity(ctx.root)
    if ctx.runner.ok(["kubectl", "get", "instrumentations.opentelemetry.io", name, "-n", namespace]):
        return READY
    return Readiness(False, f"Instrumentation {namespace}/{name} not found")


# Kong

def kong_helm_step(ctx: Context) -> Step:
    t = ctx.topology
    config = str(ctx.kong_config_path) if ctx.kong_config_path is not None else PATHS.kong_config
    extra = ["--set-file", f"dblessConfig.config={config}",
             "--set-string", f"env.tracing_sampling_rate={float(ctx.tracing_sampling_rate)!r}"]
    if ctx.external:
        extra += ["--set", "proxy.type=ClusterIP"]
    step = _helm_install(ctx, "kong", t.kong_release, t.kong_namespace, "kong", PATHS.kong_values, extra)
    return Step(step.addon, step.argv, manifest=f"{PATHS.kong_values} + {config}", timeout=step.timeout)


def _kong_ready(ctx: Context) -> Readiness:
    t = ctx.topology
    state = deployments_ready(ctx.runner, t.kong_namespace, selector=f"app.kubernetes.io/instance={t.kong_release}")
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

APP_SELECTOR = "app.kubernetes.io/part-of=otelgate-demo"


def _app_ready(ctx: Context) -> Readiness:
    namespace = ctx.topology.app_namespace
    state = deployments_ready(ctx.runner, namespace, selector=APP_SELECTOR)
    return state if not state.ready else pods_instrumented(ctx.runner, namespace, APP_SELECTOR)


def addons() -> list[Addon]:
    """The graph, in an order that satisfies it (also the order of the plan)."""
    t = TOPOLOGY
    return [
        Addon("sink", (), _sink_deploy, _sink_ready, _sink_delete, timeout=180.0,
              diagnose_namespaces=lambda ctx: (ctx.topology.sink_namespace,)),
        Addon("cert-manager", (), _cert_manager_deploy, _cert_manager_ready,
              lambda ctx: [_helm_uninstall("cert-manager", t.cert_manager_release, t.cert_manager_namespace)],
              diagnose_namespaces=lambda ctx: (ctx.topology.cert_manager_namespace,)),
        Addon("otel-operator", ("cert-manager",), _operator_deploy, _operator_ready,
              lambda ctx: [_helm_uninstall("otel-operator", t.operator_release, t.operator_namespace)],
              diagnose_namespaces=lambda ctx: (ctx.topology.operator_namespace,)),
        Addon("collector", ("otel-operator", "sink"), _collector_deploy, _collector_ready, _collector_delete,
              diagnose_namespaces=lambda ctx: (collector_identity(ctx.root)[1],)),
        Addon("instrumentation", ("otel-operator", "collector"),
              lambda ctx: [_apply("instrumentation", PATHS.instrumentation)], _instrumentation_ready,
              lambda ctx: [_delete("instrumentation", PATHS.instrumentation)], timeout=60.0),
        Addon("kong", ("collector",), lambda ctx: [kong_helm_step(ctx)], _kong_ready,
              lambda ctx: [_helm_uninstall("kong", t.kong_release, t.kong_namespace)],
              diagnose_namespaces=lambda ctx: (ctx.topology.kong_namespace,)),
        Addon("app", ("instrumentation", "kong"), lambda ctx: [_apply("app", PATHS.app, timeout=120.0)], _app_ready,
              lambda ctx: [_delete("app", PATHS.app)], timeout=600.0,
              diagnose_namespaces=lambda ctx: (ctx.topology.app_namespace,)),
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


def wait_ready(addon: Addon, ctx: Context, *, interval: float = 2.0) -> float:
    """Poll ``addon.ready`` until it holds; return the seconds it took. The timeout names what it still waited for."""
    from otelgate.waiting import poll_until

    start = time.monotonic()
    poll_until(lambda: addon.ready(ctx), lambda state: state.ready, what=f"addon {addon.name} to be ready (serving)",
               timeout=addon.timeout, interval=interval, retry_on=(CommandFailed, httpx.HTTPError, ValueError))
    return time.monotonic() - start


# --- diagnostics ---------------------------------------------------------------------------------------------------


def collect_diagnostics(ctx: Context, dest: Path, *, sink: Any = None, kind_cluster: str | None = None) -> Path:
    """Everything a person needs after a failure, in ``dest`` (KTF's bundle): get/describe of all resources, events,
    every pod's logs (previous containers too), Helm releases and values, the collector's logs, the sink's dump and
    ``kind export logs``. Each file is written even when another command fails; the token is redacted everywhere."""
    dest.mkdir(parents=True, exist_ok=True)
    runner = ctx.runner
    failures: list[str] = []

    def save(name: str, argv: Sequence[str], timeout: float = 120.0) -> None:
        try:
            result = runner.run(argv, timeout=timeout, check=False)
            text = result.stdout + (f"\n--- stderr ---\n{result.stderr}" if result.stderr.strip() else "")
        except CommandFailed as exc:
            text = str(exc)
            failures.append(f"{name}: {exc}")
        (dest / name).write_text(runner.redact(text))

    save("kubectl_get_all.yaml", ["kubectl", "get", "all,configmaps,endpointslices,serviceaccounts,roles,"
                                  "rolebindings,opentelemetrycollectors,instrumentations", "-A", "-o", "yaml"])
    save("kubectl_get_all_wide.txt", ["kubectl", "get", "all", "-A", "-o", "wide"])
    save("kubectl_describe_all.txt", ["kubectl", "describe", "all,opentelemetrycollectors,instrumentations", "-A"])
    save("kubectl_describe_nodes.txt", ["kubectl", "describe", "nodes"])
    save("events.txt", ["kubectl", "get", "events", "-A", "--sort-by=.lastTimestamp"])
    save("helm_list.txt", ["helm", "list", "-A"])
    t = ctx.topology
    for release, namespace in ((t.cert_manager_release, t.cert_manager_namespace),
                               (t.operator_release, t.operator_namespace), (t.kong_release, t.kong_namespace)):
        save(f"helm_values_{release}.yaml", ["helm", "get", "values", release, "-n", namespace, "--all"])
    _pod_logs(runner, dest / "pod-logs", failures)
    try:
        name, namespace = collector_identity(ctx.root)
        save("collector.log", ["kubectl", "logs", f"deployment/{name}-collector", "-n", namespace,
                               "--all-containers", "--timestamps", "--tail=-1"])
    except (ValueError, OSError) as exc:
        failures.append(f"collector.log: {exc}")
    if sink is not None:
        try:
            (dest / "sink-dump.json").write_text(runner.redact(json.dumps(sink.dump(), indent=1)))
        except Exception as exc:
            failures.append(f"sink-dump.json: {exc!r}")
    if kind_cluster:
        save("kind_export_logs.txt", ["kind", "export", "logs", str(dest / "kind-logs"), "--name", kind_cluster],
             timeout=300.0)
    (dest / "diagnostics_failures.txt").write_text("\n".join(failures) + ("\n" if failures else "none\n"))
    return dest


def _pod_logs(runner: Runner, folder: Path, failures: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        pods = runner.json(["kubectl", "get", "pods", "-A"]).get("items") or []
    except (CommandFailed, ValueError) as exc:
        failures.append(f"pod list: {exc}")
        return
    for pod in pods:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        restarted = any(int(s.get("restartCount", 0)) > 0 for s in (pod.get("status") or {}).get(
            "containerStatuses") or [])
        variants: list[tuple[str, list[str]]] = [("", [])] + ([(".previous", ["--previous"])] if restarted else [])
        for suffix, extra in variants:
            try:
                result = runner.run(["kubectl", "logs", name, "-n", namespace, "--all-containers", "--prefix",
                                     "--timestamps", *extra], timeout=60.0, check=False)
                text = result.stdout + result.stderr
            except CommandFailed as exc:
                text = str(exc)
                failures.append(f"logs {namespace}/{name}: {exc}")
            (folder / f"{namespace}__{name}{suffix}.log").write_text(runner.redact(text))
