"""The external stack: the kind stack's manifests on a cluster the user already runs (EKS, GKE, ...).

    otelgate up --stack external --kubeconfig PATH --sink-image REGISTRY/otelgate-sink:TAG

Differences from kind, and only these: no cluster is created or deleted; the sink image is the user's (pushed to a
registry the cluster pulls from); Kong's proxy and the sink are ClusterIP Services reached through
``kubectl port-forward`` on free local ports (node ports may be taken or unreachable); cert-manager and the Operator
are installed only when the cluster does not have them; and everything otelgate installed is removed at close
unless ``--keep-cluster``. The manifests themselves are the same files.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from otelgate.procs import ManagedProcess, free_port, port_is_open
from otelgate.stacks import kind_addons as ka
from otelgate.stacks.kind import KindOptions, KindStack, StackStartError
from otelgate.stacks.kind import check_prerequisites as _check_tools
from otelgate.waiting import poll_until

__all__ = ["ExternalStack", "check_prerequisites", "plan", "up"]

PORT_FORWARD_TIMEOUT = 30.0


def plan(options: KindOptions | argparse.Namespace | None = None) -> list[str]:
    """Every command of an external bring-up, in order (``otelgate up --stack external --dry-run``)."""
    if not isinstance(options, KindOptions):
        options = KindOptions.from_namespace(options, external=True)
    options = options if options.external else KindOptions(**{**options.__dict__, "external": True})
    image = options.sink_image or "<--sink-image REF (required)>"
    ctx = ka.Context(runner=ka.Runner(kubeconfig=options.kubeconfig), root=options.root, token="<generated>",
                     sink_image=image, gateway_url="http://127.0.0.1:<port-forward>",
                     sink_url="http://127.0.0.1:<port-forward>", external=True,
                     tracing_sampling_rate=options.settings.tracing_sampling_rate)
    graph = ka.addons()
    ka.check_graph(graph)
    lines = [f"[{step.addon}] {step.render()}" for addon in graph for step in addon.deploy(ctx)]
    t = ka.TOPOLOGY
    lines += [f"[port-forward] kubectl port-forward -n {t.kong_namespace} service/{t.kong_proxy_service} <free>:80",
              f"[port-forward] kubectl port-forward -n {t.sink_namespace} service/{t.sink_name} <free>:8080",
              "[canary] a request through Kong whose trace, metrics and log reach the sink",
              "[close] the delete steps of every addon otelgate installed, in reverse order (unless --keep-cluster)"]
    return lines


def check_prerequisites(args: argparse.Namespace | None = None) -> list[str]:
    """An existing cluster needs kubectl and helm (no Docker, no kind)."""
    return _check_tools(("kubectl", "helm"))


class ExternalStack(KindStack):
    name = "external"

    def __init__(self, options: KindOptions) -> None:
        if options.kubeconfig is None:
            raise StackStartError("--stack external needs --kubeconfig PATH (the cluster to deploy into)")
        if not options.sink_image:
            raise StackStartError("--stack external needs --sink-image REF: build the repository's Dockerfile and "
                                  "push it to a registry your cluster can pull from")
        self._forwards: list[ManagedProcess] = []
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

    def _deploy_addon(self, addon: ka.Addon, ctx: ka.Context) -> None:
        if addon.name in ("cert-manager", "otel-operator") and self._provided_by_cluster(addon.name):
            self.say(f"{addon.name}: already installed in this cluster, left alone")
            return
        super()._deploy_addon(addon, ctx)
        self._installed.append(addon)

    def _already_ready(self, addon: ka.Addon, ctx: ka.Context) -> bool:
        return False  # re-applying is idempotent (kubectl apply, helm upgrade); --keep-cluster only skips removal

    def _before_ready(self, addon: ka.Addon, ctx: ka.Context) -> None:
        """Kong's proxy and the sink are reached through port-forwards, which need a running pod first."""
        t = ka.TOPOLOGY
        targets = {"sink": (t.sink_namespace, t.sink_name, t.sink_name, 8080),
                   "kong": (t.kong_namespace, None, t.kong_proxy_service, 80)}
        if addon.name not in targets:
            return
        namespace, deployment, service, remote = targets[addon.name]
        selector = None if deployment else f"app.kubernetes.io/instance={t.kong_release}"
        poll_until(lambda: ka.deployments_ready(self.runner, namespace, selector=selector,
                                                names=[deployment] if deployment else []),
                   lambda state: state.ready, what=f"{addon.name} rolled out before port-forwarding",
                   timeout=addon.timeout, interval=2.0, retry_on=(ka.CommandFailed,))
        url = self._port_forward(addon.name, namespace, service, remote)
        if addon.name == "sink":
            self.sink_url = ctx.sink_url = url
        else:
            self.gateway_url = ctx.gateway_url = url

    def _provided_by_cluster(self, addon: str) -> bool:
        crd = {"cert-manager": "certificates.cert-manager.io",
               "otel-operator": "opentelemetrycollectors.opentelemetry.io"}[addon]
        return self.runner.ok(["kubectl", "get", "crd", crd])

    def _port_forward(self, name: str, namespace: str, service: str, remote: int) -> str:
        port = free_port()
        argv = self.runner.with_kubeconfig(["kubectl", "port-forward", "-n", namespace, f"service/{service}",
                                            f"{port}:{remote}", "--address", "127.0.0.1"])
        workdir = self._workdir()
        proc = ManagedProcess(f"port-forward-{name}", argv, workdir / f"port-forward-{name}.log").start()
        self._forwards.append(proc)
        proc.wait_ready(lambda: port_is_open("127.0.0.1", port), what=f"port-forward to {namespace}/{service}",
                        timeout=PORT_FORWARD_TIMEOUT)
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        for proc in self._forwards:
            proc.stop()
        if self._sink is not None:
            self._sink.close()
        if self.options.keep_cluster:
            self.say("everything kept (--keep-cluster)")
            return
        ctx = self._context()
        for addon in reversed(self._installed):
            t0 = time.monotonic()
            for step in addon.delete(ctx):
                try:
                    self._run(step)
                except ka.CommandFailed as exc:
                    self.say(f"{addon.name}: delete failed (continuing): {exc}")
            self.say(f"{addon.name}: removed ({time.monotonic() - t0:.1f}s)")


def up(args: argparse.Namespace | None = None) -> int:
    from otelgate.stacks.kind import up as kind_up

    return kind_up(args, external=True)


def start_from_pytest(pytest_config: object) -> ExternalStack:
    """``--stack external``: ``--kubeconfig`` and ``--sink-image`` (options or OTELGATE_KUBECONFIG /
    OTELGATE_SINK_IMAGE)."""
    import os

    def opt(name: str, env: str) -> str | None:
        getoption = getattr(pytest_config, "getoption", None)
        value = None
        if getoption is not None:
            try:
                value = getoption(name, default=None)
            except ValueError:
                value = None
        return str(value) if value else os.environ.get(env)

    kubeconfig = opt("--kubeconfig", "OTELGATE_KUBECONFIG")
    options = KindOptions(kubeconfig=Path(kubeconfig) if kubeconfig else None,
                          sink_image=opt("--sink-image", "OTELGATE_SINK_IMAGE"),
                          keep_cluster=bool(getattr(pytest_config, "getoption", lambda *a, **k: False)(
                              "keep_stack", default=False)) or os.environ.get("OTELGATE_KEEP_CLUSTER") == "1",
                          diagnostics_dir=Path(os.environ.get("OTELGATE_ARTIFACTS") or "artifacts") / "diagnostics",
                          external=True)
    missing = check_prerequisites()
    if missing:
        raise StackStartError("the external stack cannot start:\n  " + "\n  ".join(missing))
    stack = ExternalStack.start(options)
    assert isinstance(stack, ExternalStack)
    return stack
