"""The external stack: the kind stack's manifests on a cluster the user already runs (EKS, GKE, ...).

    otelgate up --stack external --kubeconfig PATH --sink-image REGISTRY/otelgate-sink:TAG

Differences from kind, and only these: no cluster is created or deleted; the sink image is the user's (pushed to a
registry the cluster pulls from); Kong's proxy and the sink are ClusterIP Services reached through supervised
``kubectl port-forward`` on fixed local ports (re-established after every Kong rollout); cert-manager and the
Operator are installed only when the cluster does not have them; the collector labels its data
``kong.deployment.name=kong-external``. Every name otelgate creates starts with ``otelgate`` and carries its
ownership label; it refuses to touch a same-named namespace or release without it and, at close (unless
``--keep-cluster``), removes only what carries it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from otelgate.cluster_topology import OWNER_LABEL, TOPOLOGY
from otelgate.stacks import kind_addons as ka
from otelgate.stacks.base import StackOptions, StackStartError
from otelgate.stacks.kind import KindStack, KindStackModule
from otelgate.stacks.kind_plan import KindOptions, addon_lines, context, ownership_line
from otelgate.stacks.kube import CommandFailed, PortForward, Runner, owned
from otelgate.waiting import poll_until

__all__ = ["STACK", "ExternalStack", "plan"]

EXTERNAL_TOOLS = ("kubectl", "helm")


def plan(options: KindOptions) -> list[str]:
    """Every command of an external bring-up, in order (``otelgate up --stack external --dry-run``)."""
    options = options if options.external else replace(options, external=True)
    image = options.sink_image or "<--sink-image REF (required)>"
    forwarded = "http://127.0.0.1:<port-forward>"
    ctx = context(options, Runner(kubeconfig=options.kubeconfig), "<generated>", image, forwarded, forwarded)
    t = TOPOLOGY
    return [f"[env] every kubectl and helm command runs with --kubeconfig {options.kubeconfig or '<--kubeconfig>'}",
            "[cluster] kubectl cluster-info    # reachable; nothing is created or deleted",
            "[cert-manager, otel-operator] skipped when the cluster already has their CRDs (then its own are used)",
            ownership_line(), *addon_lines(options, ctx),
            f"[port-forward] kubectl port-forward -n {t.kong.namespace} service/{t.kong_proxy_service} <free>:80    "
            f"# re-established after every Kong rollout",
            f"[port-forward] kubectl port-forward -n {t.sink_namespace} service/{t.sink_name} <free>:8080",
            "[report] each instrumented pod: injected / not injected / crashed; never waited on",
            "[canary] a request through Kong whose trace, metrics and log reach the sink",
            f"[close] unless --keep-cluster: helm uninstall of the releases above and deletion of the namespaces above "
            f"that carry {OWNER_LABEL}; nothing else"]


class ExternalStack(KindStack):
    name = "external"

    def __init__(self, options: KindOptions) -> None:
        if options.kubeconfig is None:
            raise StackStartError("--stack external needs --kubeconfig PATH (the cluster to deploy into)")
        if not options.sink_image:
            raise StackStartError("--stack external needs --sink-image REF: build the repository's Dockerfile "
                                  "(docker build --provenance=false ...) and push it to a registry your cluster can "
                                  "pull from")
        self.forwards: dict[str, PortForward] = {}
        self._installed: list[ka.Addon] = []
        super().__init__(options)

    def _urls(self) -> tuple[str, str]:
        # real ports are chosen when the port-forwards start (after Kong and the sink exist)
        return "http://127.0.0.1:0", "http://127.0.0.1:0"

    def _ensure_cluster(self) -> None:
        self.runner.run(["kubectl", "cluster-info"], timeout=30)
        self.say(f"cluster: reachable through {self.options.kubeconfig}")

    def _ensure_sink_image(self) -> None:
        self.say(f"sink-image: {self.sink_image} (pulled by the cluster)")

    def _graph(self) -> list[ka.Addon]:
        graph = []
        for addon in super()._graph():
            if addon.name in ("cert-manager", "otel-operator") and self._provided_by_cluster(addon.name):
                self.say(f"{addon.name}: already installed in this cluster, left alone")
                continue
            graph.append(addon)
        return graph

    def _deploy_addon(self, addon: ka.Addon, ctx: ka.Context) -> None:
        self._installed.append(addon)  # before deploying: a half-installed addon is removed too (ownership-gated)
        super()._deploy_addon(addon, ctx)

    def _already_ready(self, addon: ka.Addon, ctx: ka.Context) -> bool:
        return False  # re-applying is idempotent (kubectl apply, helm upgrade); --keep-cluster only skips removal

    def _before_ready(self, addon: ka.Addon, ctx: ka.Context) -> None:
        """Kong's proxy and the sink are reached through port-forwards, which need a running pod first."""
        t = TOPOLOGY
        targets = {"sink": (t.sink_namespace, None, t.sink_name, 8080),
                   "kong": (t.kong.namespace, f"app.kubernetes.io/instance={t.kong.name}", t.kong_proxy_service, 80)}
        if addon.name not in targets or addon.name in self.forwards:
            return
        namespace, selector, service, remote = targets[addon.name]
        poll_until(lambda: ka.deployments_ready(self.runner, namespace, selector=selector,
                                                names=[] if selector else [service]),
                   lambda state: state.ready, what=f"{addon.name} rolled out before port-forwarding",
                   timeout=addon.timeout, interval=2.0, retry_on=(CommandFailed,))
        forward = PortForward(self.runner, addon.name, namespace, service, remote, self._workdir(), say=self.say)
        self.forwards[addon.name] = forward
        url = forward.start()
        if addon.name == "sink":
            self.sink_url = ctx.sink_url = url
        else:
            self.gateway_url = ctx.gateway_url = url

    def _after_kong_rollout(self, ctx: ka.Context) -> None:
        """kubectl port-forward followed ONE Kong pod, which the rollout replaced: start a fresh forward on the same
        port (the watchdog also restarts it if it exits on its own)."""
        forward = self.forwards.get("kong")
        if forward is not None:
            forward.restart("Kong rolled out new pods")
            ctx.gateway_url = forward.url

    def _context(self) -> ka.Context:
        ctx = super()._context()
        if "kong" in self.forwards:
            ctx.gateway_url = self.forwards["kong"].url
        return ctx

    def _provided_by_cluster(self, addon: str) -> bool:
        crd = {"cert-manager": "certificates.cert-manager.io",
               "otel-operator": "opentelemetrycollectors.opentelemetry.io"}[addon]
        return self.runner.ok(["kubectl", "get", "crd", crd])

    def close_forwards(self) -> None:
        for forward in self.forwards.values():
            forward.stop()

    def close(self) -> None:
        self.close_forwards()
        if self._sink is not None:
            self._sink.close()
        if self.options.keep:
            self.say("everything kept (--keep-cluster)")
            return
        remove_owned(self.runner, self._installed, say=self.say)


def remove_owned(runner: Runner, installed: list[ka.Addon], *, say: Any = print) -> None:
    """Uninstall the releases and delete the namespaces otelgate installed — each only if it carries otelgate's
    ownership label (a same-named object of someone else's is left alone and named)."""
    for addon in reversed(installed):
        release = addon.release
        if release is None:
            continue
        labelled = runner.json(["kubectl", "get", "secrets", "-n", release.namespace, "-l",
                                f"owner=helm,name={release.name},{OWNER_LABEL}"]).get("items")
        if not labelled:
            say(f"{addon.name}: release {release.name} does not carry {OWNER_LABEL}; left alone")
            continue
        t0 = time.monotonic()
        try:
            runner.run_step(ka.helm_uninstall(release))
            say(f"{addon.name}: release {release.name} removed ({time.monotonic() - t0:.1f}s)")
        except CommandFailed as exc:
            say(f"{addon.name}: helm uninstall failed (continuing): {exc}")
    namespaces = list(dict.fromkeys(ns for addon in reversed(installed) for ns in addon.namespaces(TOPOLOGY)))
    for namespace in namespaces:
        if not owned(runner, "namespace", namespace):
            say(f"namespace {namespace} does not carry {OWNER_LABEL}; left alone")
            continue
        try:
            runner.run(["kubectl", "delete", "namespace", namespace, "--wait=true", "--timeout=300s"], timeout=330)
            say(f"namespace {namespace} removed")
        except CommandFailed as exc:
            say(f"namespace {namespace}: delete failed (continuing): {exc}")


class ExternalStackModule(KindStackModule):
    """The external stack's :class:`otelgate.stacks.base.StackModule`."""

    name = "external"
    tools = EXTERNAL_TOOLS
    external = True

    def stack_class(self) -> type[KindStack]:
        return ExternalStack

    def plan(self, options: StackOptions) -> list[str]:
        return plan(self.options(options))


STACK = ExternalStackModule()
