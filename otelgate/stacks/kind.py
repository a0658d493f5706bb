"""The kind stack: a kind cluster with cert-manager, the OpenTelemetry Operator, the collector resource, real Kong
(Helm, DB-less, manifests/kong/kong.yaml), the auto-instrumented demo app and otelgate's fake Dynatrace.

    plan(options)              every command, in order, with its manifest (``otelgate up --stack kind --dry-run``)
    check_prerequisites()      missing tools, each with how to install it
    KindStack.start(options)   bring-up: addon by addon, each waited on until it *serves*, then a canary request
                               through Kong whose trace, metrics and log must reach the sink
    start_from_pytest(config)  the same, from the suites' fixture (``--stack kind``)

This machine-independent module is verified statically in otelgate's CI (plan order and completeness, manifests
linted, collector config validated); it is run only where Docker, kind, kubectl and helm exist.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from otelgate.stacks import kind_addons as ka
from otelgate.stacks.base import StackSettings
from otelgate.waiting import poll_until

if TYPE_CHECKING:
    from otelgate.sink.client import SinkClient

CANARY_PATH = "/coupon/coupons"
KONG_SERVICE_NAME = "kong-otel"
DEFAULT_CLUSTER = "otelgate"
KONG_NODEPORT = 30080
SINK_NODEPORT = 30081
# bring-up budget per phase (seconds); the addons carry their own readiness budgets
CANARY_TIMEOUT = 180.0
RECONFIGURE_TIMEOUT = 300.0

INSTALL_HINTS: dict[str, str] = {
    "docker": "install Docker Engine or Docker Desktop and start it: https://docs.docker.com/get-docker/",
    "kind": "go install sigs.k8s.io/kind@v0.32.0  (or a release binary: https://kind.sigs.k8s.io/docs/user/quick-start/)",
    "kubectl": "https://kubernetes.io/docs/tasks/tools/  (any version within one minor of v1.36)",
    "helm": "Helm 4 (the OpenTelemetry Operator chart requires it): https://helm.sh/docs/intro/install/  "
            "or: go install helm.sh/helm/v4/cmd/helm@v4.3.1",
}


@dataclass(frozen=True)
class KindOptions:
    cluster_name: str = DEFAULT_CLUSTER
    keep_cluster: bool = False
    kubeconfig: Path | None = None          # external stack: the user's cluster; kind: written to workdir
    sink_image: str | None = None           # external: REQUIRED (a registry the cluster can pull from)
    settings: StackSettings = field(default_factory=StackSettings)
    workdir: Path | None = None
    diagnostics_dir: Path = Path("artifacts/diagnostics")
    root: Path = ka.REPO_ROOT
    external: bool = False

    @classmethod
    def from_namespace(cls, args: argparse.Namespace | None, *, external: bool = False) -> KindOptions:
        """From ``otelgate up`` arguments (options a CLI does not define fall back to defaults / env)."""
        def get(name: str, default: Any = None) -> Any:
            value = getattr(args, name, None) if args is not None else None
            return default if value is None else value

        kubeconfig = get("kubeconfig") or os.environ.get("OTELGATE_KUBECONFIG")
        settings = StackSettings(sampling_rate=get("sampling_rate"),
                                 tracing_sampling_rate=float(get("tracing_sampling_rate", 1.0)))
        return cls(cluster_name=str(get("cluster_name", os.environ.get("OTELGATE_KIND_CLUSTER", DEFAULT_CLUSTER))),
                   keep_cluster=bool(get("keep_cluster", os.environ.get("OTELGATE_KEEP_CLUSTER") == "1")),
                   kubeconfig=Path(kubeconfig) if kubeconfig else None,
                   sink_image=get("sink_image", os.environ.get("OTELGATE_SINK_IMAGE")),
                   settings=settings, workdir=get("workdir"),
                   diagnostics_dir=Path(get("diagnostics_dir", "artifacts/diagnostics")), external=external)


# --- plan ---------------------------------------------------------------------------------------------------------


def state_dir(options: KindOptions) -> Path:
    """Where otelgate keeps a cluster's private kubeconfig (kind) and generated token: per cluster, so a kept
    cluster is found again with the same token."""
    if options.workdir is not None:
        return Path(options.workdir)
    if options.external:
        key = hashlib.sha256(str(options.kubeconfig).encode()).hexdigest()[:12]
        return Path.home() / ".cache" / "otelgate" / "external" / key
    return Path.home() / ".cache" / "otelgate" / "kind" / options.cluster_name


def _kubeconfig_path(options: KindOptions) -> Path:
    return options.kubeconfig if options.kubeconfig is not None else state_dir(options) / "kubeconfig"


def cluster_steps(options: KindOptions) -> list[ka.Step]:
    kubeconfig = str(_kubeconfig_path(options))
    return [
        ka.Step("cluster", ("kind", "create", "cluster", "--name", options.cluster_name,
                            "--config", ka.PATHS.kind_cluster, "--kubeconfig", kubeconfig, "--wait", "120s"),
                manifest=ka.PATHS.kind_cluster, timeout=420.0,
                note="skipped when --keep-cluster finds it running"),
        ka.Step("cluster", ("kind", "export", "kubeconfig", "--name", options.cluster_name,
                            "--kubeconfig", kubeconfig), timeout=60.0,
                note="a private kubeconfig; the user's ~/.kube/config is left alone"),
    ]


def image_steps(options: KindOptions, image: str) -> list[ka.Step]:
    return [
        ka.Step("sink-image", ("docker", "build", "--tag", image, "--file", ka.PATHS.dockerfile, "."),
                manifest=ka.PATHS.dockerfile, timeout=900.0),
        ka.Step("sink-image", ("kind", "load", "docker-image", image, "--name", options.cluster_name),
                timeout=300.0, note="imagePullPolicy IfNotPresent: the node never pulls it"),
    ]


def _context(options: KindOptions, runner: ka.Runner, token: str, image: str,
             gateway_url: str, sink_url: str, kong_config: Path | None = None) -> ka.Context:
    return ka.Context(runner=runner, root=options.root, token=token, sink_image=image, gateway_url=gateway_url,
                      sink_url=sink_url, tracing_sampling_rate=options.settings.tracing_sampling_rate,
                      kong_config_path=kong_config, external=options.external)


def kind_urls(root: Path = ka.REPO_ROOT) -> tuple[str, str]:
    """(gateway, sink) URLs on the host, from the kind config's extraPortMappings."""
    ports = ka.kind_host_ports(root)
    return f"http://127.0.0.1:{ports[KONG_NODEPORT]}", f"http://127.0.0.1:{ports[SINK_NODEPORT]}"


def plan(options: KindOptions | argparse.Namespace | None = None) -> list[str]:
    """Every command of a bring-up, in order, one line each (what ``otelgate up --stack kind --dry-run`` prints)."""
    if not isinstance(options, KindOptions):
        options = KindOptions.from_namespace(options)
    header = f"[env] every kubectl and helm command runs with --kubeconfig {_kubeconfig_path(options)}"
    return [header] + [_plan_line(step) for step in plan_steps(options)] + _readiness_lines(options)


def plan_steps(options: KindOptions) -> list[ka.Step]:
    image = options.sink_image or ka.sink_image_tag(options.root)
    gateway, sink = kind_urls(options.root)
    runner = ka.Runner(kubeconfig=_kubeconfig_path(options))
    ctx = _context(options, runner, "<generated>", image, gateway, sink)
    steps = cluster_steps(options) + image_steps(options, image)
    graph = ka.addons()
    ka.check_graph(graph)
    for addon in graph:
        steps += addon.deploy(ctx)
    return steps


def _plan_line(step: ka.Step) -> str:
    return f"[{step.addon}] {step.render()}"


def _readiness_lines(options: KindOptions) -> list[str]:
    gateway, sink = kind_urls(options.root)
    return [f"[ready] each addon is waited on until it serves (rollouts complete, webhook answers, Kong proxy "
            f"answers at {gateway}, sink /healthz at {sink})",
            f"[canary] GET {gateway}{CANARY_PATH} with a known traceparent; its trace (kong-otel -> coupon), a Kong "
            f"metric and its access log must reach the sink"]


# --- prerequisites --------------------------------------------------------------------------------------------------


KIND_TOOLS = ("docker", "kind", "kubectl", "helm")


def check_prerequisites(tools: Sequence[str] | argparse.Namespace | None = None) -> list[str]:
    """Missing tools (and a Docker daemon that does not answer), each with how to install it. Empty = all there.
    (``otelgate up --check-prerequisites`` passes its arguments; they do not change what the kind stack needs.)"""
    tools = KIND_TOOLS if tools is None or isinstance(tools, argparse.Namespace) else tuple(tools)
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
        if version.startswith("v3."):
            missing.append(f"helm: {version} found; the OpenTelemetry Operator chart 0.122.0 requires Helm 4 "
                           f"({INSTALL_HINTS['helm']})")
    return missing


# --- the stack ----------------------------------------------------------------------------------------------------


class StackStartError(RuntimeError):
    """Bring-up failed; the message names the addon, what it waited for, and where the diagnostics are."""


def _progress(start: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(f"[{time.monotonic() - start:7.1f}s] {message}", flush=True)
    return say


class KindStack:
    """The pipeline on a kind cluster (implements :class:`otelgate.stacks.base.Stack`)."""

    name = "kind"

    def __init__(self, options: KindOptions) -> None:
        self.options = options
        self.settings = options.settings
        self.kong_deployment_name = _collector_env(options.root, "KONG_DEPLOYMENT_NAME") or "kong-kind"
        self.token = _read_or_create_token(options)
        self.runner = ka.Runner(kubeconfig=_kubeconfig_path(options), secrets=(self.token,),
                                cwd=options.root)
        self.gateway_url, self.sink_url = self._urls()
        self.sink_image = options.sink_image or ka.sink_image_tag(options.root)
        self.created_cluster = False
        self.started = time.monotonic()
        self.say = _progress(self.started)
        self._sink: SinkClient | None = None
        self._kong_config: Path | None = None
        self._scratch: Path | None = None

    # bring-up -------------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, options: KindOptions) -> KindStack:
        stack = cls(options)
        try:
            stack._bring_up()
        except BaseException as exc:
            folder = stack._diagnose_quietly()
            with contextlib.suppress(Exception):
                stack.close()
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise StackStartError(f"{exc}\ndiagnostics: {folder}") from exc
        return stack

    def _urls(self) -> tuple[str, str]:
        return kind_urls(self.options.root)

    def _context(self) -> ka.Context:
        return _context(self.options, self.runner, self.token, self.sink_image, self.gateway_url, self.sink_url,
                        self._kong_config)

    def _bring_up(self) -> None:
        self._ensure_cluster()
        self._ensure_sink_image()
        ctx = self._context()
        graph = ka.addons()
        ka.check_graph(graph)
        for addon in graph:
            self._deploy_addon(addon, ctx)
        self._canary()

    def _run(self, step: ka.Step) -> None:
        self.say(f"  $ {step.render()}")
        self.runner.run_step(step)

    def _ensure_cluster(self) -> None:
        name = self.options.cluster_name
        existing = self.runner.run(["kind", "get", "clusters"], timeout=30).stdout.split()
        create, export = cluster_steps(self.options)
        _kubeconfig_path(self.options).parent.mkdir(parents=True, exist_ok=True)
        if name in existing and self.options.keep_cluster:
            self.say(f"cluster {name}: exists, reused (--keep-cluster)")
        elif name in existing:
            raise StackStartError(f"a kind cluster named {name!r} already exists; reuse it with --keep-cluster, "
                                  f"pick another --cluster-name, or `kind delete cluster --name {name}`")
        else:
            t0 = time.monotonic()
            self.say(f"cluster {name}: creating")
            self._run(create)
            self.created_cluster = True
            self.say(f"cluster {name}: ready ({time.monotonic() - t0:.1f}s)")
        self._run(export)

    def _ensure_sink_image(self) -> None:
        build, load = image_steps(self.options, self.sink_image)
        t0 = time.monotonic()
        if self.runner.ok(["docker", "image", "inspect", self.sink_image]):
            self.say(f"sink-image: {self.sink_image} already built")
        else:
            self.say(f"sink-image: building {self.sink_image}")
            self._run(build)
        self._run(load)  # kind compares image ids and skips nodes that already have it
        self.say(f"sink-image: ready ({time.monotonic() - t0:.1f}s)")

    def _deploy_addon(self, addon: ka.Addon, ctx: ka.Context) -> None:
        t0 = time.monotonic()
        if self.options.keep_cluster and self._already_ready(addon, ctx):
            self.say(f"{addon.name}: already deployed and healthy, skipped")
            return
        self.say(f"{addon.name}: deploying")
        for step in addon.deploy(ctx):
            self._run(step)
        self._before_ready(addon, ctx)
        self.say(f"{addon.name}: waiting until it serves (up to {addon.timeout:.0f}s)")
        ka.wait_ready(addon, ctx)
        self.say(f"{addon.name}: ready ({time.monotonic() - t0:.1f}s)")

    def _before_ready(self, addon: ka.Addon, ctx: ka.Context) -> None:
        """Hook between deploy and the readiness wait (the external stack starts its port-forwards here)."""

    def _already_ready(self, addon: ka.Addon, ctx: ka.Context) -> bool:
        try:
            return addon.ready(ctx).ready
        except (ka.CommandFailed, httpx.HTTPError, ValueError):
            return False

    # readiness of the whole stack: one canary through Kong ------------------------------------------------------

    def _canary(self) -> None:
        t0 = time.monotonic()
        self.say(f"canary: GET {self.gateway_url}{CANARY_PATH}")
        trace_id = secrets.token_hex(16)
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        response = poll_until(lambda: httpx.get(f"{self.gateway_url}{CANARY_PATH}", headers=headers, timeout=10.0),
                              lambda r: r.status_code == 200, what=f"GET {CANARY_PATH} through Kong to answer 200",
                              timeout=60.0, interval=2.0, retry_on=(httpx.HTTPError,))
        sink = self.sink

        def services() -> set[str]:
            return {str(span.get("service_name")) for span in sink.spans(trace_id=trace_id)}

        poll_until(services, lambda seen: {KONG_SERVICE_NAME, "coupon"} <= seen,
                   what=f"spans of {KONG_SERVICE_NAME} and coupon in canary trace {trace_id} at the sink",
                   timeout=CANARY_TIMEOUT, interval=1.0)
        poll_until(lambda: sink.logs(trace_id=trace_id), bool,
                   what=f"Kong's access log of the canary (trace_id {trace_id}) at the sink",
                   timeout=CANARY_TIMEOUT, interval=1.0)
        poll_until(lambda: [p for p in sink.metric_points() if str(p.get("name", "")).startswith("kong_")], bool,
                   what="a Kong metric (kong_*) at the sink (scraped from Kong's Status API)",
                   timeout=CANARY_TIMEOUT, interval=2.0)
        seen = services()
        if "membership" not in seen:
            self.say("canary: note: no membership span (Go eBPF auto-instrumentation did not report; see README)")
        self.say(f"canary: trace, log and metrics reached the sink ({time.monotonic() - t0:.1f}s; "
                 f"x-kong-request-id {response.headers.get('x-kong-request-id', '?')})")
        sink.reset()
        self.say(f"stack ready in {time.monotonic() - self.started:.1f}s")

    # the Stack protocol ----------------------------------------------------------------------------------------

    @property
    def sink(self) -> SinkClient:
        if self._sink is None:
            from otelgate.sink.client import SinkClient

            self._sink = SinkClient(self.sink_url, timeout=10.0)
        return self._sink

    def reconfigure(self, **changes: Any) -> None:
        """Kong-side changes (``sampling_rate``, ``kong_plugin_config``, ``tracing_sampling_rate``) go through
        ``helm upgrade`` with a derived kong.yaml; the chart hashes the declarative config into the pod template, so
        Kong rolls, and this waits for the rollout and for the proxy to answer again. Collector-side faults
        (``drop_processors``, ``exporter_token``, ``collector_running``) patch the collector resource / Secret and
        wait for the collector's rollout."""
        unknown = set(changes) - set(StackSettings.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown stack settings {sorted(unknown)}")
        new = self.settings.with_changes(**changes)
        changed = {key for key in changes if getattr(new, key) != getattr(self.settings, key)}
        previous, self.settings = self.settings, new
        self.options = replace(self.options, settings=new)
        try:
            if changed & {"sampling_rate", "kong_plugin_config", "tracing_sampling_rate"}:
                self._reconfigure_kong()
            if changed & {"drop_processors", "exporter_token", "collector_running"}:
                self._reconfigure_collector()
        except BaseException:
            self.settings = previous
            self.options = replace(self.options, settings=previous)
            raise

    def _reconfigure_kong(self) -> None:
        derived = derive_cluster_kong_config(self.options.root, self.settings)
        workdir = self._workdir()
        self._kong_config = workdir / "kong.derived.yaml"
        self._kong_config.write_text(yaml.safe_dump(derived, sort_keys=False))
        ctx = self._context()
        kong = next(a for a in ka.addons() if a.name == "kong")
        t0 = time.monotonic()
        self.say(f"reconfigure: kong ({_describe(self.settings)})")
        # the chart hashes the declarative config into the pod template: Kong rolls; helm --wait returns when the
        # new pods are ready, wait_ready then also needs the old pods gone and the proxy answering
        self._run(ka.kong_helm_step(ctx))
        ka.wait_ready(kong, ctx)
        self.say(f"reconfigure: kong applied ({time.monotonic() - t0:.1f}s)")

    def _reconfigure_collector(self) -> None:
        name, namespace = ka.collector_identity(self.options.root)
        deployment = f"{name}-collector"
        if not self.settings.collector_running:
            self.runner.run(["kubectl", "scale", "deployment", deployment, "-n", namespace, "--replicas=0"],
                            timeout=60)
            poll_until(lambda: self.runner.json(["kubectl", "get", "pods", "-n", namespace, "-l",
                                                 f"app.kubernetes.io/name={deployment}"]).get("items"),
                       lambda pods: not pods, what=f"collector pods in {namespace} to be gone",
                       timeout=RECONFIGURE_TIMEOUT, interval=2.0)
            return
        token = self.settings.exporter_token if self.settings.exporter_token is not None else self.token
        self.runner.secrets = (self.token, token)
        ctx = self._context()
        secret = ka.render_with_token(self.options.root / ka.PATHS.dynatrace_secret, token)
        self.runner.run(["kubectl", "apply", "-f", "-"], stdin=secret, timeout=60)
        cr = _collector_with_dropped_processors(self.options.root, self.settings.drop_processors)
        self.runner.run(["kubectl", "apply", "-f", "-"], stdin=yaml.safe_dump(cr, sort_keys=False), timeout=60)
        # env from a Secret is read at container start: restart so a new token applies
        self.runner.run(["kubectl", "rollout", "restart", "deployment", deployment, "-n", namespace], timeout=60)
        self.runner.run(["kubectl", "rollout", "status", "deployment", deployment, "-n", namespace, "--timeout",
                         f"{int(RECONFIGURE_TIMEOUT)}s"], timeout=RECONFIGURE_TIMEOUT + 30)
        ka.wait_ready(next(a for a in ka.addons() if a.name == "collector"), ctx)

    def _workdir(self) -> Path:
        """Scratch files (derived kong.yaml, port-forward logs); not the state dir (kubeconfig, token)."""
        if self._scratch is None:
            self._scratch = self.options.workdir or Path(tempfile.mkdtemp(prefix=f"otelgate-{self.name}-"))
            self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def diagnose(self, dest: Path) -> Path:
        return ka.collect_diagnostics(self._context(), dest, sink=self._sink_or_none(),
                                      kind_cluster=None if self.options.external else self.options.cluster_name)

    def _sink_or_none(self) -> SinkClient | None:
        try:
            return self.sink
        except Exception:
            return None

    def _diagnose_quietly(self) -> Path | str:
        try:
            folder = self.options.diagnostics_dir / f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            return self.diagnose(folder)
        except Exception as exc:  # diagnostics must never hide the original failure
            return f"(diagnostics failed: {exc!r})"

    def close(self) -> None:
        if self._sink is not None:
            with contextlib.suppress(Exception):
                self._sink.close()
        if self.options.keep_cluster:
            self.say(f"cluster {self.options.cluster_name} kept (--keep-cluster)")
            return
        if self.created_cluster:
            self.say(f"deleting cluster {self.options.cluster_name}")
            self.runner.run(["kind", "delete", "cluster", "--name", self.options.cluster_name], timeout=300,
                            check=False)

    def urls(self) -> dict[str, str]:
        return {"gateway (Kong proxy)": self.gateway_url, "sink API": f"{self.sink_url}/api/",
                "sink ingest (in-cluster)": f"http://{ka.TOPOLOGY.sink_name}.{ka.TOPOLOGY.sink_namespace}"
                                            f".svc.cluster.local:8080/api/v2/otlp",
                "kubeconfig": str(_kubeconfig_path(self.options))}


def derive_cluster_kong_config(root: Path, settings: StackSettings) -> dict[str, Any]:
    """kong.yaml with the stack's plugin overrides applied and every endpoint and upstream kept as the cluster's own
    (the same derivation, and validation, the local stack uses; only the overrides differ from the file)."""
    from otelgate import kongconfig

    doc = kongconfig.load(root / ka.PATHS.kong_config)
    overrides = {k: dict(v) for k, v in settings.kong_plugin_config.items()}
    if settings.sampling_rate is not None:
        overrides.setdefault("opentelemetry", {})["sampling_rate"] = settings.sampling_rate
    plugins = {p["name"]: p.get("config") or {} for p in doc.get("plugins") or []}
    return kongconfig.derive_kong_config(
        doc, upstreams={},
        otlp_traces_endpoint=plugins["opentelemetry"]["traces_endpoint"],
        tcp_log_host=plugins["tcp-log"]["host"], tcp_log_port=int(plugins["tcp-log"]["port"]),
        plugin_overrides=overrides)


def _describe(settings: StackSettings) -> str:
    return (f"sampling_rate={settings.sampling_rate}, tracing_sampling_rate={settings.tracing_sampling_rate}, "
            f"plugin overrides={sorted(settings.kong_plugin_config)}")


def _collector_with_dropped_processors(root: Path, drop: tuple[str, ...]) -> dict[str, Any]:
    cr = next(d for d in ka.load_yaml_docs(root / ka.PATHS.collector) if d.get("kind") == "OpenTelemetryCollector")
    if drop:
        pipelines = ((cr.get("spec") or {}).get("config") or {}).get("service", {}).get("pipelines", {})
        for pipeline in pipelines.values():
            pipeline["processors"] = [p for p in pipeline.get("processors") or [] if p not in drop]
    return cr


def _collector_env(root: Path, name: str) -> str | None:
    cr = _collector_with_dropped_processors(root, ())
    for env in (cr.get("spec") or {}).get("env") or []:
        if env.get("name") == name and "value" in env:
            return str(env["value"])
    return None


def _read_or_create_token(options: KindOptions) -> str:
    """One random token per cluster, kept beside the kubeconfig (mode 0600) so --keep-cluster reuses it."""
    path = state_dir(options) / "dt-api-token"
    if path.exists():
        return path.read_text().strip()
    token = "dt0c01.OTELGATE" + secrets.token_hex(12).upper() + "." + secrets.token_hex(32).upper()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token)
    return token


# --- entry points ----------------------------------------------------------------------------------------------------


def _artifacts() -> Path:
    return Path(os.environ.get("OTELGATE_ARTIFACTS") or "artifacts")


def start_from_pytest(pytest_config: Any) -> KindStack:
    """The suites' fixture calls this for ``--stack kind``. ``--keep-stack`` (the plugin's) or ``--keep-cluster`` /
    OTELGATE_KEEP_CLUSTER=1 keep and reuse the cluster; ``--cluster-name`` / OTELGATE_KIND_CLUSTER names it. A failed
    bring-up writes its diagnostics under ``$OTELGATE_ARTIFACTS/diagnostics`` (default ``artifacts/diagnostics``)."""
    def opt(name: str, default: Any) -> Any:
        try:
            value = pytest_config.getoption(name, default=default)
        except (ValueError, AttributeError):
            value = default
        return default if value is None else value

    keep = bool(opt("keep_stack", False)) or bool(opt("--keep-cluster", False)) \
        or os.environ.get("OTELGATE_KEEP_CLUSTER") == "1"
    options = KindOptions(
        cluster_name=str(opt("--cluster-name", os.environ.get("OTELGATE_KIND_CLUSTER", DEFAULT_CLUSTER))),
        keep_cluster=keep, diagnostics_dir=_artifacts() / "diagnostics",
        settings=StackSettings(tracing_sampling_rate=float(opt("--tracing-sampling-rate", 1.0))))
    missing = check_prerequisites()
    if missing:
        raise StackStartError("the kind stack cannot start:\n  " + "\n  ".join(missing))
    return KindStack.start(options)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def up(args: argparse.Namespace | None = None, *, external: bool = False) -> int:
    """``otelgate up --stack kind``: bring the stack up, print its URLs, keep it until Ctrl-C."""
    options = KindOptions.from_namespace(args, external=external)
    missing = check_prerequisites(("kubectl", "helm") if external else KIND_TOOLS)
    if missing:
        for line in missing:
            print(f"missing: {line}", file=sys.stderr)
        return 1
    stack_class: type[KindStack]
    if external:
        from otelgate.stacks.external import ExternalStack
        stack_class = ExternalStack
    else:
        stack_class = KindStack
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends as cleanly as Ctrl-C
    try:
        stack = stack_class.start(options)
    except StackStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        for label, url in stack.urls().items():
            print(f"  {label:<26} {url}")
        print(f"try:  curl -i {stack.gateway_url}{CANARY_PATH}     (Ctrl-C ends; --keep-cluster keeps the cluster)",
              flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.close()
    return 0
