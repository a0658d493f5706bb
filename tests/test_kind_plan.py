"""The kind/external stacks, verified without a cluster: the plan's order and completeness, the prerequisites check,
the rendering of templated manifests, readiness arithmetic, redaction, and the derived Kong config of
``reconfigure``. Nothing here starts Docker, kind, kubectl or helm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelgate.stacks import external, kind
from otelgate.stacks import kind_addons as ka
from otelgate.stacks.base import StackSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def options(tmp_path: Path) -> kind.KindOptions:
    return kind.KindOptions(workdir=tmp_path)


def index_of(lines: list[str], *fragments: str) -> int:
    hits = [i for i, line in enumerate(lines) if all(f in line for f in fragments)]
    assert len(hits) == 1, f"expected one plan line with {fragments}, found {len(hits)}:\n" + "\n".join(lines)
    return hits[0]


def test_plan_order(options: kind.KindOptions) -> None:
    lines = kind.plan(options)
    cluster = index_of(lines, "kind create cluster", "--config manifests/kind/cluster.yaml")
    build = index_of(lines, "docker build", "--file Dockerfile")
    load = index_of(lines, "kind load docker-image otelgate-sink:")
    sink = index_of(lines, "kubectl apply", "manifests/sink/deployment.yaml")
    cert_manager = index_of(lines, "helm upgrade --install cert-manager", "--values manifests/cert-manager/values.yaml")
    operator = index_of(lines, "helm upgrade --install otel-operator", "--values manifests/otel/operator-values.yaml")
    collector = index_of(lines, "kubectl apply -f manifests/otel/collector.yaml")
    namespaces = index_of(lines, "kubectl apply -f manifests/otel/namespaces.yaml")
    secret = index_of(lines, "manifests/otel/dynatrace-secret.yaml")
    instrumentation = index_of(lines, "kubectl apply -f manifests/otel/instrumentation.yaml")
    kong = index_of(lines, "helm upgrade --install kong kong")
    app = index_of(lines, "kubectl apply -f manifests/app/simple-demo.yaml")
    assert cluster < build < load < sink, "the sink image is built and loaded before the sink deployment"
    assert cert_manager < operator < collector, "cert-manager before the operator before the collector resource"
    assert namespaces < secret < collector, "the collector's namespaces and Secret exist before the resource"
    assert operator < instrumentation < app and collector < app, "Instrumentation and collector before the app"
    assert collector < kong < app
    assert lines[-1].startswith("[canary]")


def test_plan_installs_kong_with_kong_yaml_and_the_sampling_rate(tmp_path: Path) -> None:
    options = kind.KindOptions(workdir=tmp_path, settings=StackSettings(tracing_sampling_rate=0.25))
    line = kind.plan(options)[index_of(kind.plan(options), "helm upgrade --install kong kong")]
    for fragment in ("--repo https://charts.konghq.com", "--version 3.4.1", "--namespace kong",
                     "--values manifests/kong/values.yaml", "--set-file dblessConfig.config=manifests/kong/kong.yaml",
                     "--set-string env.tracing_sampling_rate=0.25", "--wait"):
        assert fragment in line, f"{fragment!r} missing from {line!r}"


def test_plan_is_complete(options: kind.KindOptions) -> None:
    """Every manifest in the repository is applied (or passed to helm / kind / docker) by exactly the plan."""
    text = "\n".join(kind.plan(options))
    stack_folders = ("kind", "cert-manager", "otel", "kong", "app", "sink")  # manifests/load: optional load Jobs
    manifests = sorted(p.relative_to(REPO).as_posix() for folder in stack_folders
                       for p in (REPO / "manifests" / folder).rglob("*.yaml"))
    assert len(manifests) >= 14
    missing = [m for m in manifests if m not in text]
    assert not missing, f"manifests the plan never uses: {missing}"
    for line in kind.plan(options)[1:-2]:
        tool = line.split("] ", 1)[1].split()[0]
        assert tool in ("kind", "docker", "kubectl", "helm"), line
    for chart in ka.TOPOLOGY.charts.values():
        assert f"--version {chart.version}" in text
        assert "latest" not in chart.version


def test_plan_never_shows_a_token(options: kind.KindOptions) -> None:
    text = "\n".join(kind.plan(options))
    assert ka.TOKEN_PLACEHOLDER not in text and "dt0c01" not in text
    assert "token generated for this cluster, redacted" in text


def test_dry_run_through_the_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "otelgate", "up", "--stack", "kind", "--dry-run"],
                            capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip().splitlines()
    assert printed == kind.plan(kind.KindOptions.from_namespace(None)), "the CLI prints plan() unchanged"


def test_addon_graph_is_consistent_and_checked() -> None:
    graph = ka.addons()
    ka.check_graph(graph)
    names = [a.name for a in graph]
    assert names.index("cert-manager") < names.index("otel-operator") < names.index("collector")
    with pytest.raises(ValueError, match="missing cert-manager"):
        ka.check_graph([a for a in graph if a.name != "cert-manager"])
    with pytest.raises(ValueError, match="must come before"):
        ka.check_graph(list(reversed(graph)))


def test_external_plan_uses_the_same_manifests_without_kind(tmp_path: Path) -> None:
    lines = external.plan(kind.KindOptions(workdir=tmp_path, kubeconfig=tmp_path / "kc", sink_image="reg/x:1",
                                           external=True))
    text = "\n".join(lines)
    assert "kind " not in text and "docker build" not in text
    assert "--set proxy.type=ClusterIP" in text
    assert "kubectl apply -f - < manifests/sink/service.yaml" in text
    assert "image reg/x:1" in text
    for relative in ("manifests/otel/collector.yaml", "manifests/app/simple-demo.yaml", "manifests/kong/kong.yaml"):
        assert relative in text


def test_prerequisites_name_each_missing_tool_with_a_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: nothing is installed
    missing = kind.check_prerequisites()
    assert [m.split(":")[0] for m in missing] == ["docker", "kind", "kubectl", "helm"]
    assert all("install" in m for m in missing)


def test_prerequisites_find_tools_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for tool, script in {"kind": "exit 0", "kubectl": "exit 0", "helm": "echo v4.3.1"}.items():
        path = tmp_path / tool
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert kind.check_prerequisites(("kind", "kubectl", "helm")) == []
    (tmp_path / "helm").write_text("#!/bin/sh\necho v3.19.0\n")
    assert [m.split(":")[0] for m in kind.check_prerequisites(("kind", "kubectl", "helm"))] == ["helm"]


def test_templates_are_rendered_with_the_token_only_where_the_placeholder_is(tmp_path: Path) -> None:
    rendered = ka.render_with_token(REPO / ka.PATHS.dynatrace_secret, "TOKEN123")
    secret = yaml.safe_load(rendered)
    assert secret["stringData"]["api-token"] == "TOKEN123"
    assert secret["stringData"]["endpoint"].startswith("http://otelgate-sink.otelgate.svc.cluster.local:")
    literal = tmp_path / "s.yaml"
    literal.write_text("stringData: {api-token: hardcoded}\n")
    with pytest.raises(ValueError, match="placeholder"):
        ka.render_with_token(literal, "TOKEN123")


def test_sink_deployment_gets_the_built_image_and_external_services_become_cluster_ip() -> None:
    deployment = yaml.safe_load(ka.render_sink_deployment(REPO / ka.PATHS.sink_deployment, "reg/otelgate-sink:9"))
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/otelgate-sink:9"
    service = yaml.safe_load(ka.render_as_cluster_ip(REPO / ka.PATHS.sink_service))
    assert service["spec"]["type"] == "ClusterIP"
    assert all("nodePort" not in port for port in service["spec"]["ports"])


def test_sink_image_tag_follows_the_content(tmp_path: Path) -> None:
    tag = ka.sink_image_tag()
    assert tag.startswith("otelgate-sink:0.1.0-") and len(tag.rsplit("-", 1)[1]) == 12
    assert ka.sink_image_tag() == tag, "stable for the same content"


def test_urls_come_from_the_kind_port_mappings() -> None:
    gateway, sink = kind.kind_urls()
    ports = ka.kind_host_ports()
    assert gateway == f"http://127.0.0.1:{ports[kind.KONG_NODEPORT]}"
    assert sink == f"http://127.0.0.1:{ports[kind.SINK_NODEPORT]}"


class FakeKubectl(ka.Runner):
    """Answers `kubectl get deployments -o json` with a canned list (the readiness arithmetic under test)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        super().__init__()
        self.items = items

    def json(self, argv: Any, timeout: float = 30.0) -> Any:
        return {"items": self.items}


def deployment(name: str, *, replicas: int = 1, ready: int = 1, updated: int = 1, total: int = 1,
               generation: int = 2, observed: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": generation}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": ready,
                       "readyReplicas": ready, "replicas": total}}


@pytest.mark.parametrize(("item", "ready", "says"), [
    (deployment("kong"), True, ""),
    (deployment("kong", ready=0), False, "availableReplicas 0/1"),
    (deployment("kong", observed=1), False, "rollout not observed"),
    (deployment("kong", updated=0), False, "updatedReplicas 0/1"),
    (deployment("kong", total=2), False, "old pods still terminating"),
])
def test_deployment_readiness_means_rolled_out(item: dict[str, Any], ready: bool, says: str) -> None:
    state = ka.deployments_ready(FakeKubectl([item]), "kong")
    assert state.ready is ready and says in state.waiting_for


def test_readiness_names_missing_deployments() -> None:
    state = ka.deployments_ready(FakeKubectl([deployment("cert-manager")]), "cert-manager",
                                 names=["cert-manager", "cert-manager-webhook"])
    assert not state.ready and "cert-manager-webhook" in state.waiting_for


def test_runner_redacts_the_token_from_failures() -> None:
    runner = ka.Runner(secrets=("s3cr3t-token",))
    with pytest.raises(ka.CommandFailed) as failure:
        runner.run(["sh", "-c", "echo using s3cr3t-token >&2; exit 3"], timeout=10)
    assert "s3cr3t-token" not in str(failure.value) and ka.REDACTED in str(failure.value)
    with pytest.raises(ka.CommandFailed, match="timed out after 1s"):
        runner.run(["sleep", "5"], timeout=1)


def test_runner_adds_the_private_kubeconfig_to_kubectl_and_helm_only(tmp_path: Path) -> None:
    runner = ka.Runner(kubeconfig=tmp_path / "kc")
    assert runner.with_kubeconfig(["kubectl", "get", "pods"])[:3] == ["kubectl", "--kubeconfig", str(tmp_path / "kc")]
    assert runner.with_kubeconfig(["kind", "get", "clusters"]) == ["kind", "get", "clusters"]


def test_reconfigure_derives_kong_yaml_with_only_the_overrides_changed() -> None:
    from otelgate import kongconfig

    original = kongconfig.load(REPO / ka.PATHS.kong_config)
    derived = kind.derive_cluster_kong_config(REPO, StackSettings(sampling_rate=0.1))
    diff = kongconfig.config_diff(original, derived)
    assert diff and all("plugins[opentelemetry].config.sampling_rate" in line for line in diff), diff


def test_collector_fault_drops_processors_from_every_pipeline() -> None:
    cr = kind._collector_with_dropped_processors(REPO, ("cumulative_to_delta",))
    pipelines = cr["spec"]["config"]["service"]["pipelines"]
    assert all("cumulative_to_delta" not in p.get("processors", []) for p in pipelines.values())
    assert any("batch" in p.get("processors", []) for p in pipelines.values())


def test_token_is_generated_once_per_cluster_and_private(tmp_path: Path) -> None:
    options = kind.KindOptions(workdir=tmp_path)
    first = kind._read_or_create_token(options)
    assert kind._read_or_create_token(options) == first
    assert (tmp_path / "dt-api-token").stat().st_mode & 0o077 == 0


def test_external_stack_requires_kubeconfig_and_image(tmp_path: Path) -> None:
    with pytest.raises(kind.StackStartError, match="--kubeconfig"):
        external.ExternalStack(kind.KindOptions(workdir=tmp_path, external=True, sink_image="x:1"))
    with pytest.raises(kind.StackStartError, match="--sink-image"):
        external.ExternalStack(kind.KindOptions(workdir=tmp_path, external=True, kubeconfig=tmp_path / "kc"))


def test_kind_stack_satisfies_the_stack_protocol(tmp_path: Path) -> None:
    from otelgate.stacks.base import Stack

    stack = kind.KindStack(kind.KindOptions(workdir=tmp_path))
    assert isinstance(stack, Stack)
    assert stack.kong_deployment_name == "kong-kind"
    assert stack.gateway_url == "http://127.0.0.1:18080"


def test_e2e_workflow_runs_nox_e2e_on_pull_requests_and_uploads_diagnostics() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "e2e.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert "pull_request" in triggers
    steps = workflow["jobs"]["e2e"]["steps"]
    runs = [s for s in steps if "nox -s e2e" in str(s.get("run", ""))]
    assert len(runs) == 1
    upload = next(s for s in steps if s.get("name") == "Upload diagnostics")
    assert upload["if"] == "failure()"
    assert "artifacts/diagnostics/" in upload["with"]["path"]  # a failed bring-up (KindStack.start)
    assert "artifacts/stack-diagnosis/" in upload["with"]["path"]  # failed suites (otelgate/pytest_plugin.py)
    assert steps.index(runs[0]) < steps.index(upload)


def test_check_prerequisites_through_the_cli(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "otelgate", "up", "--stack", "kind", "--check-prerequisites"],
                            capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
                            env={"PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode == 1
    for tool in ("docker", "kind", "kubectl", "helm"):
        assert f"missing: {tool}: not on PATH; install:" in result.stderr, result.stderr
