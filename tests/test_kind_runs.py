"""The kind/external stacks' first-run risks, each driven through otelgate's real code against fake kubectl, helm and
kind executables on PATH (tests/kube_fakes.py) that record every call and answer as scripted. Each test fails on the
behaviour before issue #13's fix; the upstream fact each relies on is cited where it is used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from kube_fakes import FakeTools

from otelgate.cluster_topology import TOPOLOGY
from otelgate.stacks import external, kind
from otelgate.stacks import kind_addons as ka
from otelgate.stacks.base import StackStartError
from otelgate.stacks.kube import Runner, ownership_problems

OWNED = {"otelgate.dev/owned-by": "otelgate"}


def rolled_out(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 1, "labels": labels},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 1, "readyReplicas": 1,
                       "replicas": 1}}


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    tools = FakeTools(tmp_path / "bin")
    monkeypatch.setenv("PATH", tools.path_env)
    return tools


def kind_options(tmp_path: Path, **changes: Any) -> kind.KindOptions:
    return kind.KindOptions(workdir=tmp_path / "work", state_dir=tmp_path / "state", **changes)


def external_options(tmp_path: Path) -> kind.KindOptions:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    return kind_options(tmp_path, external=True, kubeconfig=kubeconfig, sink_image="registry.example/otelgate-sink:1")


# --- (1) the collector-stop control scales the collector RESOURCE -------------------------------------------------


def test_collector_stop_scales_the_resource_and_start_scales_it_back(fakes: FakeTools, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake models the Operator: scaling the Deployment changes nothing (it writes spec.replicas back from the
    resource: internal/manifests/collector/deployment.go@v0.158.0:38); scaling the resource through its scale
    subresource (apis/v1beta1/opentelemetrycollector_types.go@v0.158.0:16) removes the pods. The old code scaled the
    Deployment and waited for pods that never went."""
    monkeypatch.setattr(kind, "RECONFIGURE_TIMEOUT", 5.0)
    fakes.state_path.write_text(json.dumps({
        "collector_replicas": 1,
        "deployments": {"otelgate-observability": [rolled_out("kong-otel-collector")]}}))
    stack = kind.KindStack(kind_options(tmp_path))
    stack.reconfigure(collector_running=False)
    scales = [argv for argv in fakes.argvs("kubectl") if argv[0] == "scale"]
    assert scales == [["scale", "opentelemetrycollector/kong-otel", "-n", "otelgate-observability", "--replicas=0"]]
    assert fakes.state()["collector_replicas"] == 0

    stack.reconfigure(collector_running=True)
    scales = [argv for argv in fakes.argvs("kubectl") if argv[0] == "scale"]
    assert scales[-1] == ["scale", "opentelemetrycollector/kong-otel", "-n", "otelgate-observability", "--replicas=1"]
    assert fakes.state()["collector_replicas"] == 1
    assert not any("deployment" in argv[1:2] for argv in fakes.argvs("kubectl") if argv[0] == "scale")


def test_collector_restart_applies_the_token_through_stdin_only(fakes: FakeTools, tmp_path: Path) -> None:
    fakes.state_path.write_text(json.dumps({
        "collector_replicas": 1, "deployments": {"otelgate-observability": [rolled_out("kong-otel-collector")]}}))
    stack = kind.KindStack(kind_options(tmp_path))
    stack.reconfigure(exporter_token="dt0c01.WRONGWRONGWRONG.WRONGWRONGWRONGWRONGWRONG")
    applies = [c for c in fakes.calls("kubectl") if c["argv"][-3:] == ["apply", "-f", "-"]]
    assert len(applies) == 2
    assert "dt0c01.WRONGWRONGWRONG" in applies[0]["stdin"]
    assert all("dt0c01" not in " ".join(c["argv"]) for c in fakes.calls())
    assert "value: kong-kind" in applies[1]["stdin"]


# --- (2) external: the Kong port-forward survives a rollout ---------------------------------------------------------


def _external_stack_forwarding(fakes: FakeTools, tmp_path: Path, *, watchdog: bool) -> external.ExternalStack:
    fakes.state_path.write_text(json.dumps({
        "deployments": {"otelgate-kong": [rolled_out("otelgate-kong-kong")]},
        "break_forwards_on_helm": True}))
    stack = external.ExternalStack(external_options(tmp_path))
    ctx = stack._context()
    stack._before_ready(ka.addon("kong"), ctx)
    if not watchdog:
        stack.forwards["kong"].check_interval = 3600.0
    return stack


def test_external_reestablishes_the_kong_forward_after_a_rollout(fakes: FakeTools, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """kubectl port-forward follows the ONE pod it picked; the fake helm upgrade leaves that forward running with a
    dead tunnel (its pod is gone). Only a fresh forward after the rollout answers again, on the same URL."""
    monkeypatch.setattr(kind, "RECONFIGURE_TIMEOUT", 6.0)
    stack = _external_stack_forwarding(fakes, tmp_path, watchdog=False)
    try:
        url = stack.gateway_url
        assert httpx.get(f"{url}/x", timeout=3).headers["server"].startswith("kong")
        stack.reconfigure(sampling_rate=0.5)
        assert stack.gateway_url == url, "the gateway URL the suites hold stays valid"
        assert httpx.get(f"{url}/x", timeout=3).headers["server"].startswith("kong")
        forwards = [argv for argv in fakes.argvs("kubectl") if argv[0] == "port-forward"]
        assert len(forwards) == 2 and forwards[0] == forwards[1]
        assert [a for a in forwards[0] if a.startswith("service/")] == ["service/otelgate-kong-kong-proxy"]
        assert stack.forwards["kong"].restarts == 1
    finally:
        stack.close_forwards()


def test_external_forward_watchdog_restarts_a_forward_that_exited(fakes: FakeTools, tmp_path: Path) -> None:
    """A forward that ends on its own (kubectl exits when its pod goes) is restarted on the same port."""
    stack = _external_stack_forwarding(fakes, tmp_path, watchdog=True)
    try:
        url = stack.gateway_url
        first = fakes.forward_pids()
        fakes.kill_forwards()
        import time

        deadline = time.monotonic() + 15
        forward = stack.forwards["kong"]
        while time.monotonic() < deadline and (forward.restarts == 0 or not forward.alive()):
            time.sleep(0.2)
        assert stack.forwards["kong"].restarts >= 1
        assert httpx.get(f"{url}/x", timeout=3).headers["server"].startswith("kong")
        assert set(fakes.forward_pids()) - set(first), "a new kubectl port-forward process serves the same URL"
    finally:
        stack.close_forwards()


# --- (3)-(5) bring-up gates on the app containers, instrumentation is reported ----------------------------------------


def pod(service: str, *, agents: list[tuple[str, dict[str, Any]]] = (), app_ready: bool = True,  # type: ignore[assignment]
        annotation: str | None = "nodejs", init: bool = True) -> dict[str, Any]:
    annotations = {f"instrumentation.opentelemetry.io/inject-{annotation}": "otelgate"} if annotation else {}
    agent_specs = [{"name": name} for name, _ in agents]
    spec: dict[str, Any] = {"containers": [{"name": service}]}
    status: dict[str, Any] = {"containerStatuses": [{"name": service, "ready": app_ready, "restartCount": 0,
                                                     "state": {"running": {}}}]}
    if init:
        spec["initContainers"] = agent_specs
        status["initContainerStatuses"] = [{"name": name, **s} for name, s in agents]
    else:
        spec["containers"] += agent_specs
        status["containerStatuses"] += [{"name": name, **s} for name, s in agents]
    return {"metadata": {"name": f"{service}-abc", "labels": {"app": service}, "annotations": annotations},
            "spec": spec, "status": status}


CRASHLOOP = {"ready": False, "restartCount": 7, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}
DONE = {"ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}


def demo_pods() -> list[dict[str, Any]]:
    return [
        pod("coupon", annotation="nodejs"),  # no agent: the webhook did not inject it
        # membership's Go agent is a second container (internal/instrumentation/golang.go@v0.158.0:81) and exits on
        # any load failure (opentelemetry-go-instrumentation cli/main.go@v0.24.0:173-176): a crash loop
        pod("membership", annotation="go", init=False,
            agents=[("opentelemetry-auto-instrumentation", CRASHLOOP)]),
        pod("inventory", annotation="python", agents=[("opentelemetry-auto-instrumentation-python", DONE)]),
        pod("pricing", annotation="dotnet", agents=[("opentelemetry-auto-instrumentation-dotnet", DONE)]),
        pod("frontend", annotation="java", app_ready=False),  # not needed by any claim: never gates bring-up
    ]


def test_app_readiness_ignores_optional_agents_and_unneeded_services(fakes: FakeTools, tmp_path: Path) -> None:
    """The old readiness waited for every demo Deployment (membership's pod is never Ready while its Go agent
    crash-loops) and for every pod to be instrumented; now only the app containers of the services the claims
    need count."""
    fakes.state_path.write_text(json.dumps({"pods": {"otelgate-demo": demo_pods()}}))
    ctx = kind.KindStack(kind_options(tmp_path))._context()
    assert ka.addon("app").ready(ctx) == ka.READY
    from otelgate import topology

    assert set(topology.current().demo_services) == {"coupon", "membership", "inventory", "pricing"}

    pods = demo_pods()
    pods[0]["status"]["containerStatuses"][0]["ready"] = False
    fakes.state_path.write_text(json.dumps({"pods": {"otelgate-demo": pods}}))
    state = ka.addon("app").ready(ctx)
    assert not state.ready and "coupon" in state.waiting_for


def test_instrumentation_report_says_injected_not_injected_crashed_with_log_lines(fakes: FakeTools,
                                                                                  tmp_path: Path) -> None:
    fakes.state_path.write_text(json.dumps({
        "pods": {"otelgate-demo": demo_pods()},
        "logs": {"membership-abc/opentelemetry-auto-instrumentation":
                 "level=ERROR msg=\"failed to load instrumentation\" error=\"no offsets for net/http\""}}))
    report = {s.pod: s for s in ka.instrumentation_report(Runner(), "otelgate-demo")}
    assert report["coupon-abc"].state == "not injected"
    assert report["membership-abc"].state == "crashed"
    assert "failed to load instrumentation" in report["membership-abc"].line()
    assert "CrashLoopBackOff" in report["membership-abc"].detail
    assert report["inventory-abc"].state == "injected" and report["pricing-abc"].state == "injected"
    logs = [argv for argv in fakes.argvs("kubectl") if argv[0] == "logs"]
    assert logs == [["logs", "membership-abc", "-n", "otelgate-demo", "-c", "opentelemetry-auto-instrumentation",
                     f"--tail={ka.LOG_TAIL_LINES}", "--previous"]]


def test_membership_service_routes_to_it_while_its_agent_crashes() -> None:
    """A crash-looping agent container makes the pod not Ready, which takes it out of a Service's endpoints; the
    demo's membership Service publishes not-ready addresses so coupon still reaches it."""
    docs = ka.load_yaml_docs(kind.KindOptions().manifests / ka.PATHS.app)
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "membership")
    assert service["spec"]["publishNotReadyAddresses"] is True


def everything_ready() -> dict[str, Any]:
    """Fake state of a cluster where every addon is rolled out and the demo pods run (see demo_pods)."""
    deployments = {
        "otelgate": [rolled_out("otelgate-sink")],
        "otelgate-cert-manager": [rolled_out(n) for n in ("cm", "cm-webhook", "cm-cainjector")],
        "otelgate-operator": [rolled_out("otelgate-operator-opentelemetry-operator")],
        "otelgate-observability": [rolled_out("kong-otel-collector")],
        "otelgate-kong": [rolled_out("otelgate-kong-kong")],
    }
    return {"deployments": deployments, "pods": {"otelgate-demo": demo_pods()}}


# --- (7) ownership --------------------------------------------------------------------------------------------------


def test_refuses_a_namespace_or_release_of_the_same_name_without_the_label(fakes: FakeTools) -> None:
    fakes.state_path.write_text(json.dumps({
        "namespaces": {"otelgate-kong": {}, "otelgate-demo": OWNED},
        "helm_secrets": [{"name": "otelgate-kong", "namespace": "team-a", "labels": {}},
                         {"name": "otelgate-operator", "namespace": "otelgate-operator", "labels": OWNED}]}))
    problems = ownership_problems(Runner(), TOPOLOGY.namespaces, [(r.name, r.namespace) for r in TOPOLOGY.releases])
    assert len(problems) == 2, problems
    assert problems[0].startswith("namespace otelgate-kong exists and is not otelgate's")
    assert problems[1].startswith("Helm release otelgate-kong exists in namespace team-a and is not otelgate's")


def test_release_check_falls_back_to_the_release_namespace_without_cluster_wide_rights(fakes: FakeTools) -> None:
    fakes.state_path.write_text(json.dumps({
        "forbid_cluster_secrets": True,
        "helm_secrets": [{"name": "otelgate-kong", "namespace": "otelgate-kong", "labels": {}}]}))
    problems = ownership_problems(Runner(), [], [("otelgate-kong", "otelgate-kong")])
    assert problems and problems[0].startswith("Helm release otelgate-kong exists in namespace otelgate-kong")
    lookups = [argv for argv in fakes.argvs("kubectl") if argv[:2] == ["get", "secrets"]]
    assert "--all-namespaces" in lookups[0] and lookups[1][2:4] == ["-n", "otelgate-kong"]


def test_external_bring_up_stops_before_installing_over_a_foreign_release(fakes: FakeTools, tmp_path: Path) -> None:
    fakes.state_path.write_text(json.dumps({
        "helm_secrets": [{"name": "otelgate-kong", "namespace": "otelgate-kong", "labels": {}}]}))
    with pytest.raises(StackStartError, match="refusing to install over what otelgate does not own"):
        external.ExternalStack.start(external_options(tmp_path))
    assert not [argv for argv in fakes.argvs("helm") if argv[0] == "upgrade"]
    assert not [argv for argv in fakes.argvs("kubectl") if argv[0] == "apply"]


def test_close_removes_only_what_carries_the_label(fakes: FakeTools, tmp_path: Path) -> None:
    fakes.state_path.write_text(json.dumps({
        "namespaces": {"otelgate": OWNED, "otelgate-observability": OWNED, "otelgate-kong": {},
                       "otelgate-demo": OWNED},
        "helm_secrets": [{"name": "otelgate-kong", "namespace": "otelgate-kong", "labels": {}}]}))
    stack = external.ExternalStack(external_options(tmp_path))
    stack._installed = [ka.addon("sink"), ka.addon("collector"), ka.addon("kong"), ka.addon("app")]
    stack.close()
    assert not [argv for argv in fakes.argvs("helm") if argv[0] == "uninstall"], "the unlabelled release stays"
    deleted = [argv[2] for argv in fakes.argvs("kubectl") if argv[:2] == ["delete", "namespace"]]
    assert sorted(deleted) == ["otelgate", "otelgate-demo", "otelgate-observability"]
    assert set(fakes.state()["namespaces"]) == {"otelgate-kong"}


# --- the kind cluster's lifecycle goes through pytest-kubernetes --------------------------------------------------


def test_kind_cluster_created_loaded_and_deleted_through_pytest_kubernetes(fakes: FakeTools, tmp_path: Path) -> None:
    options = kind_options(tmp_path, cluster_name="otelgate-t1")
    cluster = kind.KindCluster(options)
    cluster.create()
    cluster.load_image("otelgate-sink:0.1.0-abc")
    assert kind.kubeconfig_path(options).exists(), "the private kubeconfig pytest-kubernetes passed to kind"
    cluster.delete()
    argvs = fakes.argvs("kind")
    assert argvs[0] == ["create", "cluster", "--wait", "120s", "--config", str(kind.cluster_config_path(options)),
                        "--kubeconfig", str(kind.kubeconfig_path(options))]
    assert argvs[0][:6] == [a for a in kind.cluster_steps(options)[0].argv[1:7]], "the plan shows what runs"
    assert ["load", "docker-image", "otelgate-sink:0.1.0-abc", "--name", "otelgate-t1"] in argvs
    assert argvs[-1] == ["delete", "cluster", "--name", "otelgate-t1"]
    assert not kind.kubeconfig_path(options).exists()
    assert "name: otelgate-t1" in kind.cluster_config_path(options).read_text()


def test_kept_cluster_is_reused_not_recreated(fakes: FakeTools, tmp_path: Path) -> None:
    fakes.state_path.write_text(json.dumps({"kind_clusters": ["otelgate-t2"], "cluster_ready": True}))
    options = kind_options(tmp_path, cluster_name="otelgate-t2", keep=True)  # no private kubeconfig yet
    stack = kind.KindStack(options)
    stack._ensure_cluster()
    assert not stack.created_cluster
    assert ["export", "kubeconfig", "--name", "otelgate-t2", "--kubeconfig", str(kind.kubeconfig_path(options))] \
        in fakes.argvs("kind")
    assert not [argv for argv in fakes.argvs("kind") if argv[:2] == ["create", "cluster"]]
    stack.close()
    assert not [argv for argv in fakes.argvs("kind") if argv[:2] == ["delete", "cluster"]]


def test_an_existing_cluster_without_keep_is_refused(fakes: FakeTools, tmp_path: Path) -> None:
    fakes.state_path.write_text(json.dumps({"kind_clusters": ["otelgate-t3"]}))
    stack = kind.KindStack(kind_options(tmp_path, cluster_name="otelgate-t3"))
    with pytest.raises(StackStartError, match="already exists; reuse it with --keep-cluster"):
        stack._ensure_cluster()


# --- a whole external bring-up, in order ---------------------------------------------------------------------------


def test_external_bring_up_runs_every_step_in_order_and_close_removes_it(fakes: FakeTools, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """ExternalStack.start end to end against the fakes (everything answers ready; the canary, which needs real
    telemetry, is replaced by a recorder): the order of the commands, the token only on stdin, the labels, the
    port-forwards, the report, then close removing exactly what it installed."""
    fakes.state_path.write_text(json.dumps(everything_ready()))
    canaries: list[str] = []
    monkeypatch.setattr(external.ExternalStack, "_canary", lambda self: canaries.append(self.gateway_url))
    stack = external.ExternalStack.start(external_options(tmp_path))
    try:
        assert canaries == [stack.gateway_url] and stack.gateway_url != stack.sink_url
        assert {s.pod: s.state for s in stack.instrumentation}["membership-abc"] == "crashed"
        kubectl = fakes.argvs("kubectl")
        helm = [argv for argv in fakes.argvs("helm") if argv[0] == "upgrade"]
        assert [argv[2] for argv in helm] == ["otelgate-cert-manager", "otelgate-operator", "otelgate-kong"]
        assert all(argv[argv.index("--labels") + 1] == "otelgate.dev/owned-by=otelgate" for argv in helm)
        applied = [argv[-1] if argv[-1] != "-" else "<stdin>" for argv in kubectl
                   if argv[0] == "apply" and "--dry-run=server" not in argv]
        assert applied[0] == "manifests/sink/namespace.yaml" or applied[0].endswith("sink/namespace.yaml")
        assert applied[-1].endswith("app/simple-demo.yaml")
        first_apply = next(i for i, argv in enumerate(kubectl) if argv[0] == "apply")
        ownership = [i for i, argv in enumerate(kubectl) if argv[:2] in (["get", "namespace"], ["get", "secrets"])]
        assert ownership and max(ownership) < first_apply, "ownership is checked before anything is applied"
        forwards = [argv for argv in kubectl if argv[0] == "port-forward"]
        assert [a for argv in forwards for a in argv if a.startswith("service/")] == \
            ["service/otelgate-sink", "service/otelgate-kong-kong-proxy"]
        token = stack.token
        assert all(token not in " ".join(call["argv"]) for call in fakes.calls())
        assert sum(token in call["stdin"] for call in fakes.calls("kubectl")) == 2, "the two Secrets, via stdin"
    finally:
        stack.close()
    assert [argv[1] for argv in fakes.argvs("helm") if argv[0] == "uninstall"] == \
        ["otelgate-kong", "otelgate-operator", "otelgate-cert-manager"], "reverse order, each labelled"
    assert fakes.state()["namespaces"] == {} and fakes.state()["helm_secrets"] == []
    assert not any(p.alive() for p in stack.forwards.values())


def test_external_leaves_a_clusters_own_cert_manager_and_operator_alone(fakes: FakeTools, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    deployments = {"otelgate": [rolled_out("otelgate-sink")], "otelgate-kong": [rolled_out("otelgate-kong-kong")],
                   "otelgate-observability": [rolled_out("kong-otel-collector")]}
    fakes.state_path.write_text(json.dumps({
        "crds": ["certificates.cert-manager.io", "opentelemetrycollectors.opentelemetry.io"],
        "deployments": deployments, "pods": {"otelgate-demo": demo_pods()}}))
    monkeypatch.setattr(external.ExternalStack, "_canary", lambda self: None)
    stack = external.ExternalStack.start(external_options(tmp_path))
    stack.close()
    assert [argv[2] for argv in fakes.argvs("helm") if argv[0] == "upgrade"] == ["otelgate-kong"]
    assert [argv[1] for argv in fakes.argvs("helm") if argv[0] == "uninstall"] == ["otelgate-kong"]
    applied = " ".join(" ".join(argv) for argv in fakes.argvs("kubectl") if argv[0] == "apply")
    assert "cert-manager/namespace.yaml" not in applied and "operator-namespace.yaml" not in applied


# --- a whole kind bring-up, in order ---------------------------------------------------------------------------------


class _NodePorts:
    """What kind's extraPortMappings would answer on the host: Kong's proxy (404 as Kong) and the sink's /healthz."""

    def __init__(self) -> None:
        import http.server
        import socketserver
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/healthz" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def version_string(self) -> str:
                return "kong/3.9.1"

            def log_message(self, *args: Any) -> None:
                pass

        self.servers = [socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.ports = [server.server_address[1] for server in self.servers]

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def test_kind_bring_up_runs_every_step_in_order_and_close_deletes_the_cluster(
        fakes: FakeTools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KindStack.start end to end against the fakes: pytest-kubernetes creates the cluster with the rendered config
    and the private kubeconfig, the sink image is built with --provenance=false and loaded, ownership is checked
    before anything is applied, every addon is waited on, the instrumentation is reported; close deletes the cluster
    it created. The host ports of a copy of the kind config point at two local listeners standing in for kind's port
    mappings; the canary (real telemetry) is replaced by a recorder."""
    import shutil

    manifests = tmp_path / "manifests"
    shutil.copytree(kind.KindOptions().manifests, manifests)
    node_ports = _NodePorts()
    config = (manifests / "kind" / "cluster.yaml").read_text()
    config = config.replace("hostPort: 18080", f"hostPort: {node_ports.ports[0]}")
    (manifests / "kind" / "cluster.yaml").write_text(config.replace("hostPort: 18081",
                                                                    f"hostPort: {node_ports.ports[1]}"))
    fakes.state_path.write_text(json.dumps(everything_ready()))
    canaries: list[str] = []
    monkeypatch.setattr(kind.KindStack, "_canary", lambda self: canaries.append(self.gateway_url))
    try:
        stack = kind.KindStack.start(kind_options(tmp_path, cluster_name="otelgate-t4", manifests=manifests,
                                                  sink_image="otelgate-sink:t4"))
        assert canaries == [f"http://127.0.0.1:{node_ports.ports[0]}"]
        assert stack.created_cluster
        stack.close()
    finally:
        node_ports.close()
    kind_calls = [argv[:2] for argv in fakes.argvs("kind")]
    assert kind_calls == [["get", "clusters"], ["create", "cluster"], ["load", "docker-image"],
                          ["delete", "cluster"]]
    assert fakes.argvs("docker")[1][:3] == ["build", "--provenance=false", "--tag"]
    order = [c["tool"] + " " + " ".join(c["argv"][:3]) for c in fakes.calls() if c["tool"] in ("kind", "docker")
             or (c["tool"] == "kubectl" and "apply" in c["argv"]) or (c["tool"] == "helm" and "upgrade" in c["argv"])]
    assert order[:3] == ["kind get clusters", "kind create cluster --wait", "docker image inspect otelgate-sink:t4"]
    assert order.index("docker build --provenance=false --tag") < order.index("kind load docker-image otelgate-sink:t4")
    helm = [argv[2] for argv in fakes.argvs("helm") if argv[0] == "upgrade"]
    assert helm == ["otelgate-cert-manager", "otelgate-operator", "otelgate-kong"]
    assert {s.state for s in stack.instrumentation} == {"injected", "not injected", "crashed"}
    assert fakes.state()["kind_clusters"] == []
