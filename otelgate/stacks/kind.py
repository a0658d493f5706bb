"""The kind stack: a kind cluster with cert-manager, the OpenTelemetry Operator, the collector resource, real Kong
(Helm, DB-less, manifests/kong/kong.yaml), the auto-instrumented demo app and otelgate's fake Dynatrace.

    plan(options)              every command, in order, with its manifest (``otelgate up --stack kind --dry-run``)
    check_prerequisites(...)   missing tools, each with how to install it
    KindStack.start(options)   bring-up: addon by addon, each waited on until it *serves*, then a canary request
                               through Kong whose trace, metrics and log must reach the sink
    STACK                      the :class:`~otelgate.stacks.base.StackModule` of ``otelgate up`` and the pytest plugin

The cluster's lifecycle (create or reuse, load the sink image, delete) goes through pytest-kubernetes' kind manager
with otelgate's private kubeconfig; every other command through :class:`~otelgate.stacks.kube.Runner`.
Verified statically in otelgate's CI (plan, fake kubectl/helm runs, manifests linted); run only where Docker, kind,
kubectl and helm exist.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
import yaml

from otelgate.cluster_topology import PATHS, TOPOLOGY, collector_identity
from otelgate.stacks import kind_addons as ka
from otelgate.stacks.base import (
    COLLECTOR_SIDE,
    KONG_RESTART,
    KONG_SIDE,
    StackOptions,
    StackSettings,
    StackStartError,
    generate_token,
)
from otelgate.stacks.kind_plan import (
    CLUSTER_TIMEOUT,
    DEFAULT_CLUSTER,
    KIND_TOOLS,
    KONG_NODEPORT,
    SINK_NODEPORT,
    KindOptions,
    canary_services,
    check_prerequisites,
    cluster_config_path,
    cluster_steps,
    context,
    default_sink_image,
    image_steps,
    kind_urls,
    kubeconfig_path,
    plan,
    render_cluster_config,
    sink_image_build_step,
    state_dir,
)
from otelgate.stacks.kube import CommandFailed, Runner, Step, ownership_problems
from otelgate.waiting import poll_until

if TYPE_CHECKING:
    from otelgate.sink.client import SinkClient

__all__ = ["DEFAULT_CLUSTER", "KONG_NODEPORT", "SINK_NODEPORT", "STACK", "KindCluster", "KindOptions", "KindStack",
           "check_prerequisites", "cluster_config_path", "cluster_steps", "kubeconfig_path", "plan",
           "sink_image_build_step", "state_dir"]

CANARY_TIMEOUT = 180.0
RECONFIGURE_TIMEOUT = 300.0

# --- the kind cluster, through pytest-kubernetes --------------------------------------------------------------------


class KindCluster:
    """Create or reuse, load images into and delete the kind cluster with pytest-kubernetes' kind manager and
    otelgate's private kubeconfig (the user's ~/.kube/config is never touched)."""

    def __init__(self, options: KindOptions) -> None:
        from pytest_kubernetes.providers.kind import KindManagerBase

        config = cluster_config_path(options)
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(render_cluster_config(options))
        self.options = options
        self.manager = KindManagerBase(options.cluster_name, str(config), kubeconfig_path(options))

    def create(self) -> None:
        """Create it, or reuse it when the private kubeconfig reaches a ready cluster (the manager checks first)."""
        from pytest_kubernetes.options import ClusterOptions

        self._call(lambda: self.manager.create(ClusterOptions(cluster_timeout=CLUSTER_TIMEOUT), timeout=120,
                                               options=["--wait", "120s"]), "kind create cluster")

    def load_image(self, image: str) -> None:
        self._call(lambda: self.manager.load_image(image), f"kind load docker-image {image}")

    def delete(self) -> None:
        self._call(self.manager.delete, f"kind delete cluster --name {self.options.cluster_name}")

    @staticmethod
    def _call(action: Callable[[], object], what: str) -> None:
        try:
            action()
        except subprocess.CalledProcessError as exc:
            raise CommandFailed(f"exit {exc.returncode}: {what}\n{_text(exc.stderr)[-4000:]}") from None
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"timed out: {what}") from None
        except RuntimeError as exc:  # pytest-kubernetes: "Cluster '<name>' is not ready."
            raise CommandFailed(f"{what}: {exc}") from None


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


# --- the stack ----------------------------------------------------------------------------------------------------


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
        self.kong_deployment_name = options.deployment_name
        self.token = _read_or_create_token(options)
        self.kubeconfig = kubeconfig_path(options)
        self.runner = Runner(kubeconfig=self.kubeconfig, secrets=(self.token,))
        self.gateway_url, self.sink_url = self._urls()
        self.sink_image = default_sink_image(options)
        self.cluster: KindCluster | None = None
        self.created_cluster = False
        self.started = time.monotonic()
        self.say = _progress(self.started)
        self._sink: SinkClient | None = None
        self._kong_config: Path | None = None
        self._scratch: Path | None = None
        self.instrumentation: list[ka.InstrumentationStatus] = []

    # bring-up -------------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, options: KindOptions) -> Self:
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
        return kind_urls(self.options.manifests)

    def _context(self) -> ka.Context:
        return context(self.options, self.runner, self.token, self.sink_image, self.gateway_url, self.sink_url,
                       self._kong_config)

    def _bring_up(self) -> None:
        self._ensure_cluster()
        self._ensure_sink_image()
        ctx = self._context()
        graph = self._graph()
        self._check_ownership(graph)
        for addon in graph:
            self._deploy_addon(addon, ctx)
        self._report_instrumentation()
        self._canary()

    def _graph(self) -> list[ka.Addon]:
        graph = ka.addons()
        ka.check_graph(graph)
        return graph

    def _check_ownership(self, graph: Sequence[ka.Addon]) -> None:
        namespaces = [ns for addon in graph for ns in addon.namespaces(TOPOLOGY)]
        releases = [(addon.release.name, addon.release.namespace) for addon in graph if addon.release is not None]
        problems = ownership_problems(self.runner, namespaces, releases)
        if problems:
            raise StackStartError("refusing to install over what otelgate does not own:\n  " + "\n  ".join(problems)
                                  + "\nremove or rename them, or use another cluster")

    def _run(self, step: Step) -> None:
        self.say(f"  $ {step.render()}")
        self.runner.run_step(step)

    def _ensure_cluster(self) -> None:
        name = self.options.cluster_name
        existing = self.runner.run(["kind", "get", "clusters"], timeout=30).stdout.split()
        if name in existing and not self.options.keep:
            raise StackStartError(f"a kind cluster named {name!r} already exists; reuse it with --keep-cluster, "
                                  f"pick another --cluster-name, or `kind delete cluster --name {name}`")
        if name in existing:
            # the private kubeconfig may be gone (a cleaned cache); without it the manager would try to create
            self.runner.run(["kind", "export", "kubeconfig", "--name", name, "--kubeconfig", str(self.kubeconfig)],
                            timeout=60)
        self.cluster = KindCluster(self.options)
        t0 = time.monotonic()
        self.say(f"cluster {name}: {'reusing' if name in existing else 'creating'} "
                 f"({cluster_steps(self.options)[0].render()})")
        self.cluster.create()
        self.created_cluster = name not in existing
        self.say(f"cluster {name}: ready ({time.monotonic() - t0:.1f}s)")

    def _ensure_sink_image(self) -> None:
        build, load = image_steps(self.options, self.sink_image)
        t0 = time.monotonic()
        if self.runner.ok(["docker", "image", "inspect", self.sink_image]):
            self.say(f"sink-image: {self.sink_image} already built")
        else:
            self.say(f"sink-image: building {self.sink_image}")
            self._run(build)
        self.say(f"  $ {load.render()}")
        assert self.cluster is not None
        self.cluster.load_image(self.sink_image)
        self.say(f"sink-image: ready ({time.monotonic() - t0:.1f}s)")

    def _deploy_addon(self, addon: ka.Addon, ctx: ka.Context) -> None:
        t0 = time.monotonic()
        if self.options.keep and self._already_ready(addon, ctx):
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

    def _after_kong_rollout(self, ctx: ka.Context) -> None:
        """Hook after a Kong rollout replaced its pods (the external stack re-establishes its port-forward)."""

    def _already_ready(self, addon: ka.Addon, ctx: ka.Context) -> bool:
        try:
            return addon.ready(ctx).ready
        except (CommandFailed, httpx.HTTPError, ValueError):
            return False

    def _report_instrumentation(self) -> None:
        try:
            self.instrumentation = ka.instrumentation_report(self.runner, TOPOLOGY.app_namespace)
        except (CommandFailed, ValueError) as exc:
            self.say(f"instrumentation: could not be read ({exc})")
            return
        for status in self.instrumentation:
            self.say(f"instrumentation: {status.line()}")

    # readiness of the whole stack: one canary through Kong ------------------------------------------------------

    def _canary(self) -> None:
        t0 = time.monotonic()
        route = self.options.topology.canary
        required = set(canary_services(self.options))
        self.say(f"canary: GET {self.gateway_url}{route.path}")
        trace_id = secrets.token_hex(16)
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        response = poll_until(lambda: httpx.get(f"{self.gateway_url}{route.path}", headers=headers, timeout=10.0),
                              lambda r: r.status_code == 200, what=f"GET {route.path} through Kong to answer 200",
                              timeout=60.0, interval=2.0, retry_on=(httpx.HTTPError,))
        sink = self.sink

        def services() -> set[str]:
            return {str(span.get("service_name")) for span in sink.spans(trace_id=trace_id)}

        try:
            poll_until(services, lambda seen: required <= seen,
                       what=f"spans of {' and '.join(sorted(required))} in canary trace {trace_id} at the sink",
                       timeout=CANARY_TIMEOUT, interval=1.0)
        except AssertionError as exc:
            self._report_instrumentation()  # the likeliest cause: coupon's agent; say what the pods show now
            report = "\n  ".join(s.line() for s in self.instrumentation) or "(no instrumented pods found)"
            raise AssertionError(f"{exc}\ninstrumentation now:\n  {report}") from exc
        poll_until(lambda: sink.logs(trace_id=trace_id), bool,
                   what=f"Kong's access log of the canary (trace_id {trace_id}) at the sink",
                   timeout=CANARY_TIMEOUT, interval=1.0)
        poll_until(lambda: [p for p in sink.metric_points() if str(p.get("name", "")).startswith("kong_")], bool,
                   what="a Kong metric (kong_*) at the sink (scraped from Kong's Status API)",
                   timeout=CANARY_TIMEOUT, interval=2.0)
        missing = [name for name in route.service_path if name not in services()]
        if missing:
            self.say(f"canary: note: no span of {', '.join(missing)} (reported, not waited on; see the "
                     f"instrumentation lines)")
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
        """Kong-side changes go through ``helm upgrade`` with a derived kong.yaml (the chart hashes the declarative
        config into the pod template, so Kong rolls; this waits for the rollout and for the proxy to answer again).
        Collector-side faults re-apply the collector resource / Secret, or scale the resource (stop/start)."""
        new = self.settings.with_changes(**changes)
        changed = self.settings.differs_in(new)
        previous, self.settings = self.settings, new
        self.options = replace(self.options, settings=new)
        try:
            if changed & (KONG_SIDE | KONG_RESTART):
                self._reconfigure_kong()
            if changed & COLLECTOR_SIDE:
                self._reconfigure_collector()
        except BaseException:
            self.settings = previous
            self.options = replace(self.options, settings=previous)
            raise

    def _reconfigure_kong(self) -> None:
        derived = derive_cluster_kong_config(self.options.manifests, self.settings)
        self._kong_config = self._workdir() / "kong.derived.yaml"
        self._kong_config.write_text(yaml.safe_dump(derived, sort_keys=False))
        ctx = self._context()
        t0 = time.monotonic()
        self.say(f"reconfigure: kong ({_describe(self.settings)})")
        self._run(ka.kong_helm_step(ctx))
        release = TOPOLOGY.kong
        # helm --wait returns when the new pods are ready; the old ones must be gone before anything forwards to Kong
        poll_until(lambda: ka.deployments_ready(self.runner, release.namespace,
                                                selector=f"app.kubernetes.io/instance={release.name}"),
                   lambda state: state.ready, what="Kong's rollout to finish (old pods gone)",
                   timeout=RECONFIGURE_TIMEOUT, interval=2.0, retry_on=(CommandFailed, ValueError))
        self._after_kong_rollout(ctx)
        ka.wait_ready(ka.addon("kong"), ctx, timeout=RECONFIGURE_TIMEOUT)
        self.say(f"reconfigure: kong applied ({time.monotonic() - t0:.1f}s)")

    def _reconfigure_collector(self) -> None:
        name, namespace = collector_identity(self.options.manifests)
        if not self.settings.collector_running:
            self._scale_collector(name, namespace, 0)
            poll_until(lambda: self._collector_pods(name, namespace), lambda pods: not pods,
                       what=f"collector pods in {namespace} to be gone", timeout=RECONFIGURE_TIMEOUT, interval=2.0,
                       retry_on=(CommandFailed, ValueError))
            return
        token = self.settings.exporter_token if self.settings.exporter_token is not None else self.token
        self.runner.secrets = (self.token, token)
        ctx = replace(self._context(), token=token)
        self._run(ka.secret_apply_step(ctx))
        self._run(ka.collector_apply_step(ctx))
        # the manifest sets no spec.replicas, so applying it does not undo a stop: scale it back explicitly
        self._scale_collector(name, namespace, 1)
        # env from a Secret is read at container start: new pods for a new token (the Deployment recreates them)
        self.runner.run(["kubectl", "delete", "pods", "-n", namespace, "-l", collector_pod_selector(name),
                         "--wait=true", "--timeout=120s"], timeout=150)
        ka.wait_ready(ka.addon("collector"), ctx, timeout=RECONFIGURE_TIMEOUT)

    def _scale_collector(self, name: str, namespace: str, replicas: int) -> None:
        self.runner.run(collector_scale_argv(name, namespace, replicas), timeout=60)

    def _collector_pods(self, name: str, namespace: str) -> list[Any]:
        pods = self.runner.json(["kubectl", "get", "pods", "-n", namespace, "-l", collector_pod_selector(name)])
        return list(pods.get("items") or [])

    def _workdir(self) -> Path:
        """Scratch files (derived kong.yaml, port-forward logs); not the state dir (kubeconfig, token)."""
        if self._scratch is None:
            self._scratch = self.options.workdir or Path(tempfile.mkdtemp(prefix=f"otelgate-{self.name}-"))
            self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def diagnose(self, dest: Path) -> Path:
        from otelgate.stacks.kind_diagnostics import collect_diagnostics

        return collect_diagnostics(self._context(), dest, sink=self._sink_or_none(),
                                   kind_cluster=None if self.options.external else self.options.cluster_name)

    def _sink_or_none(self) -> SinkClient | None:
        try:
            return self.sink
        except Exception:
            return None

    def _diagnose_quietly(self) -> Path | str:
        try:
            return self.diagnose(self._workdir() / "diagnostics" / f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        except Exception as exc:  # diagnostics must never hide the original failure
            return f"(diagnostics failed: {exc!r})"

    def close(self) -> None:
        if self._sink is not None:
            with contextlib.suppress(Exception):
                self._sink.close()
        if self.options.keep:
            self.say(f"cluster {self.options.cluster_name} kept (--keep-cluster)")
            return
        if self.created_cluster and self.cluster is not None:
            self.say(f"deleting cluster {self.options.cluster_name}")
            try:
                self.cluster.delete()
            except CommandFailed as exc:
                self.say(f"deleting the cluster failed: {exc}")

    def urls(self) -> dict[str, str]:
        return {"gateway (Kong proxy)": self.gateway_url, "sink API": f"{self.sink_url}/api/",
                "sink ingest (in-cluster)": f"http://{TOPOLOGY.sink_name}.{TOPOLOGY.sink_namespace}"
                                            f".svc.cluster.local:8080/api/v2/otlp",
                "kubeconfig": str(self.kubeconfig)}


def collector_scale_argv(name: str, namespace: str, replicas: int) -> list[str]:
    """Scale the collector through its resource's scale subresource (apis/v1beta1/opentelemetrycollector_types.go
    @v0.158.0:16, same at v0.148.0). Not the Deployment: the Operator owns it and writes spec.replicas back from the
    resource on every reconcile (internal/manifests/collector/deployment.go@v0.158.0:38)."""
    return ["kubectl", "scale", f"opentelemetrycollector/{name}", "-n", namespace, f"--replicas={replicas}"]


def collector_pod_selector(name: str) -> str:
    """The Operator labels the collector's pods app.kubernetes.io/name=<name>-collector
    (internal/manifests/manifestutils/labels.go@v0.158.0:59-60)."""
    return f"app.kubernetes.io/name={name}-collector"


def derive_cluster_kong_config(manifests: Path, settings: StackSettings) -> dict[str, Any]:
    """kong.yaml with the stack's plugin overrides applied and every endpoint and upstream kept as the cluster's own
    (the same derivation, and validation, the local stack uses; only the overrides differ from the file)."""
    from otelgate import kongconfig

    doc = kongconfig.load(manifests / PATHS.kong_config)
    plugins = {p["name"]: p.get("config") or {} for p in doc.get("plugins") or []}
    return kongconfig.derive_kong_config(
        doc, upstreams={},
        otlp_traces_endpoint=plugins["opentelemetry"]["traces_endpoint"],
        tcp_log_host=plugins["tcp-log"]["host"], tcp_log_port=int(plugins["tcp-log"]["port"]),
        plugin_overrides=settings.kong_plugin_overrides())


def _describe(settings: StackSettings) -> str:
    return (f"sampling_rate={settings.sampling_rate}, tracing_sampling_rate={settings.tracing_sampling_rate}, "
            f"plugin overrides={sorted(settings.kong_plugin_config)}")


def _read_or_create_token(options: KindOptions) -> str:
    """One random token per cluster, kept beside the kubeconfig (mode 0600) so --keep-cluster reuses it."""
    path = state_dir(options) / "dt-api-token"
    if path.exists():
        return path.read_text().strip()
    token = generate_token()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token)
    return token


# --- otelgate up ------------------------------------------------------------------------------------------------------


def run_up(start: Callable[[], KindStack], status_interval: float) -> int:
    """``otelgate up --stack kind|external``: bring the stack up, print its URLs and status lines until Ctrl-C."""
    from otelgate.stacks.console import print_status_until_interrupted, print_urls, sink_status, stop_on_signals

    stop_on_signals()
    try:
        stack = start()
    except KeyboardInterrupt:
        print("interrupted during bring-up; what was started was removed (unless --keep-cluster)", file=sys.stderr,
              flush=True)
        return 130
    except StackStartError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        print_urls(stack.urls())
        print(f"try:  curl -i {stack.gateway_url}{stack.options.topology.canary_path}     "
              f"(Ctrl-C ends; --keep-cluster keeps it)", flush=True)
        print_status_until_interrupted(lambda: sink_status(stack.sink, "(in the cluster)"), status_interval)
    finally:
        stack.close()
    return 0


class KindStackModule:
    """The kind stack's :class:`otelgate.stacks.base.StackModule` (the external stack's derives from it)."""

    name = "kind"
    tools: tuple[str, ...] = KIND_TOOLS
    external = False

    def options(self, options: StackOptions) -> KindOptions:
        return KindOptions.from_stack_options(options, external=self.external)

    def stack_class(self) -> type[KindStack]:
        return KindStack

    def plan(self, options: StackOptions) -> list[str]:
        return plan(self.options(options))

    def check_prerequisites(self, options: StackOptions) -> list[str]:
        return check_prerequisites(self.tools)

    def start(self, options: StackOptions) -> KindStack:
        missing = self.check_prerequisites(options)
        if missing:
            raise StackStartError(f"the {self.name} stack cannot start:\n  " + "\n  ".join(missing))
        return self.stack_class().start(self.options(options))

    def up(self, options: StackOptions, status_interval: float) -> int:
        missing = self.check_prerequisites(options)
        if missing:
            print("\n".join(f"missing: {line}" for line in missing), file=sys.stderr, flush=True)
            return 1
        return run_up(lambda: self.start(options), status_interval)


STACK = KindStackModule()
