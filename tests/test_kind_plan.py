"""The kind/external stacks, verified without a cluster: the plan's order and completeness, ownership of every name,
the prerequisites check, the rendering of templated manifests, readiness arithmetic, redaction, and the manifests'
first-run fixes (collector pipeline, pinned images, docs they point at). Nothing here starts Docker, kind, kubectl
or helm; tests/test_kind_runs.py drives the stacks against fake executables."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelgate import paths
from otelgate.cluster_topology import (
    OWNER_LABEL_KEY,
    OWNER_LABEL_VALUE,
    PATHS,
    TOKEN_PLACEHOLDER,
    TOPOLOGY,
    kind_host_ports,
)
from otelgate.stacks import external, kind
from otelgate.stacks import kind_addons as ka
from otelgate.stacks.base import StackModule, StackOptions, StackSettings
from otelgate.stacks.kube import REDACTED, CommandFailed, Runner

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the plan shows manifest paths relative to the working directory


@pytest.fixture
def options(tmp_path: Path) -> kind.KindOptions:
    return kind.KindOptions(workdir=tmp_path, state_dir=tmp_path / "state", manifests=MANIFESTS)


def index_of(lines: list[str], *fragments: str) -> int:
    hits = [i for i, line in enumerate(lines) if all(f in line for f in fragments)]
    assert len(hits) == 1, f"expected one plan line with {fragments}, found {len(hits)}:\n" + "\n".join(lines)
    return hits[0]


def test_plan_order(options: kind.KindOptions) -> None:
    lines = kind.plan(options)
    cluster = index_of(lines, "kind create cluster", "manifests/kind/cluster.yaml")
    build = index_of(lines, "docker build", "--file Dockerfile")
    load = index_of(lines, "kind load docker-image otelgate-sink:")
    ownership = index_of(lines, "[ownership]")
    sink = index_of(lines, "kubectl apply", "manifests/sink/deployment.yaml")
    cert_manager = index_of(lines, "helm upgrade --install otelgate-cert-manager",
                            "--values manifests/cert-manager/values.yaml")
    operator = index_of(lines, "helm upgrade --install otelgate-operator",
                        "--values manifests/otel/operator-values.yaml")
    collector = index_of(lines, "kubectl apply -f - < manifests/otel/collector.yaml")
    namespaces = index_of(lines, "kubectl apply -f manifests/otel/namespaces.yaml")
    secret = index_of(lines, "manifests/otel/dynatrace-secret.yaml")
    instrumentation = index_of(lines, "kubectl apply -f manifests/otel/instrumentation.yaml")
    kong = index_of(lines, "helm upgrade --install otelgate-kong kong")
    app = index_of(lines, "kubectl apply -f manifests/app/simple-demo.yaml")
    assert cluster < build < load < ownership < sink, "image built and loaded, ownership checked, then the sink"
    assert cert_manager < operator < collector, "cert-manager before the operator before the collector resource"
    assert namespaces < secret < collector, "the collector's namespaces and Secret exist before the resource"
    assert operator < instrumentation < app and collector < app, "Instrumentation and collector before the app"
    assert collector < kong < app
    assert lines[-1].startswith("[canary]")


def test_plan_installs_kong_with_kong_yaml_the_sampling_rate_and_the_label(tmp_path: Path) -> None:
    options = kind.KindOptions(workdir=tmp_path, state_dir=tmp_path, settings=StackSettings(tracing_sampling_rate=0.25))
    lines = kind.plan(options)
    line = lines[index_of(lines, "helm upgrade --install otelgate-kong kong")]
    for fragment in ("--repo https://charts.konghq.com", "--version 3.4.1", "--namespace otelgate-kong",
                     "--values manifests/kong/values.yaml", "--set-file dblessConfig.config=manifests/kong/kong.yaml",
                     "--set-string env.tracing_sampling_rate=0.25", "--labels otelgate.dev/owned-by=otelgate",
                     "--wait"):
        assert fragment in line, f"{fragment!r} missing from {line!r}"


def test_plan_is_complete(options: kind.KindOptions) -> None:
    """Every manifest in the repository is applied (or passed to helm / kind / docker) by exactly the plan."""
    lines = kind.plan(options)
    text = "\n".join(lines)
    stack_folders = ("kind", "cert-manager", "otel", "kong", "app", "sink")  # manifests/load: optional load Jobs
    manifests = sorted(p.relative_to(REPO).as_posix() for folder in stack_folders
                       for p in (MANIFESTS / folder).rglob("*.yaml"))
    assert len(manifests) >= 16
    missing = [m for m in manifests if m not in text]
    assert not missing, f"manifests the plan never uses: {missing}"
    for line in lines:
        if line.startswith(("[env]", "[ownership]", "[ready]", "[report]", "[canary]")):
            continue
        assert line.split("] ", 1)[1].split()[0] in ("kind", "docker", "kubectl", "helm"), line
    for chart in TOPOLOGY.charts.values():
        assert f"--version {chart.version}" in text
        assert "latest" not in chart.version


def test_plan_never_shows_a_token(options: kind.KindOptions) -> None:
    text = "\n".join(kind.plan(options))
    assert TOKEN_PLACEHOLDER not in text and "dt0c01" not in text
    assert "token generated for this cluster, redacted" in text


def test_sink_image_is_built_without_a_provenance_attestation(options: kind.KindOptions) -> None:
    """kind load docker-image fails for an image carrying a provenance attestation under Docker's containerd image
    store (kubernetes-sigs/kind#3795: the saved index names an attestation manifest the archive lacks;
    kubernetes-sigs/kind#4236); BuildKit adds one by default, --provenance=false leaves it out."""
    build = kind.sink_image_build_step(options, "otelgate-sink:t")
    assert build.argv[:3] == ("docker", "build", "--provenance=false")
    assert build.argv[-1] == "."
    with pytest.raises(kind.StackStartError, match="--sink-image"):
        kind.sink_image_build_step(kind.KindOptions(checkout=None), "otelgate-sink:t")


def test_dry_run_through_the_cli_prints_the_stack_modules_plan() -> None:
    result = subprocess.run([sys.executable, "-m", "otelgate", "up", "--stack", "kind", "--dry-run"],
                            capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == kind.STACK.plan(StackOptions())


def test_kind_and_external_are_stack_modules_without_an_import_cycle() -> None:
    assert isinstance(kind.STACK, StackModule) and kind.STACK.name == "kind"
    assert isinstance(external.STACK, StackModule) and external.STACK.name == "external"
    from otelgate.stacks.registry import stack_module

    assert stack_module("kind") is kind.STACK and stack_module("external") is external.STACK
    source = (REPO / "otelgate" / "stacks" / "kind.py").read_text()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert "otelgate.stacks.external" not in imported, "kind must not import external (external imports kind)"


def test_addon_graph_is_consistent_and_checked() -> None:
    graph = ka.addons()
    ka.check_graph(graph)
    names = [a.name for a in graph]
    assert names.index("cert-manager") < names.index("otel-operator") < names.index("collector")
    with pytest.raises(ValueError, match="missing cert-manager"):
        ka.check_graph([a for a in graph if a.name != "cert-manager"])
    with pytest.raises(ValueError, match="must come before"):
        ka.check_graph(list(reversed(graph)))


# --- ownership: names and labels -----------------------------------------------------------------------------------


def external_plan(tmp_path: Path) -> list[str]:
    return external.plan(kind.KindOptions(workdir=tmp_path, state_dir=tmp_path, kubeconfig=tmp_path / "kc",
                                          sink_image="reg/x:1", external=True))


def test_external_dry_run_names_only_otelgate_owned_namespaces_and_releases(tmp_path: Path) -> None:
    lines = external_plan(tmp_path)
    named: set[str] = set()
    for line in lines:
        argv = line.split("] ", 1)[1].split("    #")[0].split()
        for flag in ("--namespace", "-n"):
            named |= {argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag}
        if argv[:3] == ["helm", "upgrade", "--install"]:
            named.add(argv[3])
    assert named >= {"otelgate", "otelgate-kong", "otelgate-cert-manager", "otelgate-operator"}
    assert all(name.startswith("otelgate") for name in named), sorted(named)
    # every object the plan applies, in the namespaces it lives in
    for relative in (PATHS.sink_namespace, PATHS.sink_secret, PATHS.sink_deployment, PATHS.sink_service,
                     PATHS.cert_manager_namespace, PATHS.operator_namespace, PATHS.collector_namespaces,
                     PATHS.dynatrace_secret, PATHS.collector, PATHS.instrumentation, PATHS.app):
        for doc in ka.load_yaml_docs(MANIFESTS / relative):
            meta = doc["metadata"]
            where = meta["name"] if doc["kind"] == "Namespace" else meta.get("namespace", "<none>")
            assert where.startswith("otelgate"), f"{relative}: {doc['kind']}/{meta['name']} in {where}"
            assert (meta.get("labels") or {}).get(OWNER_LABEL_KEY) == OWNER_LABEL_VALUE, \
                f"{relative}: {doc['kind']}/{meta['name']} lacks {OWNER_LABEL_KEY}"
    values = yaml.safe_load((MANIFESTS / PATHS.kong_values).read_text())
    assert values["extraLabels"] == {OWNER_LABEL_KEY: OWNER_LABEL_VALUE}  # charts/kong _helpers.tpl@kong-3.4.1:35
    assert set(TOPOLOGY.namespaces) == {"otelgate", "otelgate-cert-manager", "otelgate-operator",
                                        "otelgate-observability", "otelgate-kong", "otelgate-demo"}


def test_external_plan_uses_the_same_manifests_without_kind(tmp_path: Path) -> None:
    text = "\n".join(external_plan(tmp_path))
    assert "kind " not in text and "docker build" not in text
    assert "--set proxy.type=ClusterIP" in text
    assert "kubectl apply -f - < manifests/sink/service.yaml" in text
    assert "image reg/x:1" in text
    assert "KONG_DEPLOYMENT_NAME=kong-external" in text
    for relative in ("manifests/otel/collector.yaml", "manifests/app/simple-demo.yaml", "manifests/kong/kong.yaml"):
        assert relative in text


def test_external_data_is_labelled_kong_external(tmp_path: Path) -> None:
    cr = yaml.safe_load_all(ka.render_collector(MANIFESTS, (), "kong-external"))
    resource = next(d for d in cr if d["kind"] == "OpenTelemetryCollector")
    env = {e["name"]: e.get("value") for e in resource["spec"]["env"]}
    assert env["KONG_DEPLOYMENT_NAME"] == "kong-external"
    kubeconfig = tmp_path / "kc"
    stack = external.ExternalStack(kind.KindOptions(workdir=tmp_path, state_dir=tmp_path, kubeconfig=kubeconfig,
                                                    sink_image="reg/x:1", external=True))
    assert stack.kong_deployment_name == "kong-external"
    assert kind.KindStack(kind.KindOptions(workdir=tmp_path, state_dir=tmp_path)).kong_deployment_name == "kong-kind"
    from otelgate import topology

    assert ka.manifest_deployment_name(MANIFESTS) == topology.current(MANIFESTS).deployment_name("kind"), \
        "the collector manifest's literal KONG_DEPLOYMENT_NAME is otelgate.toml's kind value"


# --- the manifests' first-run fixes -------------------------------------------------------------------------------


def collector_pipelines() -> dict[str, Any]:
    return dict(ka.collector_resource(MANIFESTS)["spec"]["config"]["service"]["pipelines"])


def test_local_stack_derives_the_clusters_metrics_pipeline() -> None:
    """The local stack runs the cluster resource's metrics pipeline unchanged (no metric_start_time in either:
    tests/test_metric_start_time.py shows why, with the real collector)."""
    from otelgate.collector.config import CollectorPorts, derive_local_config

    processors = collector_pipelines()["metrics"]["processors"]
    assert "metric_start_time" not in processors and "cumulative_to_delta" in processors
    ports = CollectorPorts(**{name: 40000 + i for i, name in enumerate(CollectorPorts.__dataclass_fields__)})
    local = derive_local_config(ka.collector_resource(MANIFESTS), ports=ports, sink_endpoint="http://127.0.0.1:1",
                                kong_status_target="127.0.0.1:2")
    assert local["service"]["pipelines"]["metrics"]["processors"] == processors


def test_kong_image_is_a_patch_release() -> None:
    values = yaml.safe_load((MANIFESTS / PATHS.kong_values).read_text())
    assert re.fullmatch(r"\d+\.\d+\.\d+", values["image"]["tag"]), values["image"]["tag"]


def test_nodejs_agent_supports_coupons_node_version() -> None:
    """coupon runs Node 18.3.0; auto-instrumentations-node >= 0.57 (SDK 2.x) declares engines
    "^18.19.0 || >=20.6.0", 0.56.0 declares ">=14" (npm registry). The Operator published 0.56.0 as this image
    (versions.txt@v0.122.0) with the layout later Operators inject (internal/instrumentation/nodejs.go@v0.158.0:48)."""
    doc = next(d for d in ka.load_yaml_docs(MANIFESTS / PATHS.instrumentation) if d["kind"] == "Instrumentation")
    assert doc["spec"]["nodejs"]["image"] == \
        "ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-nodejs:0.56.0"


def test_manifests_point_only_at_docs_that_exist() -> None:
    pointers = {(path.relative_to(REPO).as_posix(), match) for path in MANIFESTS.rglob("*.yaml")
                for match in re.findall(r"docs/[\w./-]+\.md", path.read_text())}
    missing = sorted(p for p in pointers if not (REPO / p[1]).is_file())
    assert not missing, f"manifests point at docs that do not exist: {missing}"


# --- prerequisites, rendering, readiness, runner ----------------------------------------------------------------------


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
    (tmp_path / "helm").write_text("#!/bin/sh\necho v3.13.0+g825e86f\n")
    assert kind.check_prerequisites(("kind", "kubectl", "helm")) == []
    (tmp_path / "helm").write_text("#!/bin/sh\necho v3.12.3+g3a31588\n")  # no --labels on upgrade yet
    problems = kind.check_prerequisites(("kind", "kubectl", "helm"))
    assert [m.split(":")[0] for m in problems] == ["helm"] and "--labels" in problems[0]


def test_templates_are_rendered_with_the_token_only_where_the_placeholder_is(tmp_path: Path) -> None:
    rendered = ka.render_with_token(MANIFESTS / PATHS.dynatrace_secret, "TOKEN123")
    secret = yaml.safe_load(rendered)
    assert secret["stringData"]["api-token"] == "TOKEN123"
    assert secret["stringData"]["endpoint"].startswith("http://otelgate-sink.otelgate.svc.cluster.local:")
    literal = tmp_path / "s.yaml"
    literal.write_text("stringData: {api-token: hardcoded}\n")
    with pytest.raises(ValueError, match="placeholder"):
        ka.render_with_token(literal, "TOKEN123")


def test_sink_deployment_gets_the_built_image_and_external_services_become_cluster_ip() -> None:
    deployment = yaml.safe_load(ka.render_sink_deployment(MANIFESTS / PATHS.sink_deployment, "reg/otelgate-sink:9"))
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/otelgate-sink:9"
    service = yaml.safe_load(ka.render_as_cluster_ip(MANIFESTS / PATHS.sink_service))
    assert service["spec"]["type"] == "ClusterIP"
    assert all("nodePort" not in port for port in service["spec"]["ports"])


def test_operator_webhook_probe_uses_a_namespace_that_exists_before_the_app() -> None:
    probe = yaml.safe_load(ka.instrumentation_probe(MANIFESTS, TOPOLOGY.operator.namespace))
    assert probe["kind"] == "Instrumentation" and probe["metadata"]["namespace"] == "otelgate-operator"


def test_sink_image_tag_follows_the_content() -> None:
    from otelgate.sinkimage import sink_image_tag

    tag = sink_image_tag(REPO)
    assert tag.startswith("otelgate-sink:0.1.0-") and len(tag.rsplit("-", 1)[1]) == 12
    assert sink_image_tag(REPO) == tag, "stable for the same content"
    assert kind.default_sink_image(kind.KindOptions(checkout=REPO)) == tag


def test_urls_come_from_the_kind_port_mappings() -> None:
    gateway, sink = kind.kind_urls(MANIFESTS)
    ports = kind_host_ports(MANIFESTS)
    assert gateway == f"http://127.0.0.1:{ports[kind.KONG_NODEPORT]}"
    assert sink == f"http://127.0.0.1:{ports[kind.SINK_NODEPORT]}"


class FakeKubectl(Runner):
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


def test_readiness_names_missing_deployments_and_counts_a_minimum() -> None:
    state = ka.deployments_ready(FakeKubectl([deployment("cert-manager")]), "cert-manager",
                                 names=["cert-manager", "cert-manager-webhook"])
    assert not state.ready and "cert-manager-webhook" in state.waiting_for
    state = ka.deployments_ready(FakeKubectl([deployment("a"), deployment("b")]), "x", selector="s", minimum=3)
    assert not state.ready and "2 of at least 3" in state.waiting_for


def test_runner_redacts_the_token_from_failures() -> None:
    runner = Runner(secrets=("s3cr3t-token",))
    with pytest.raises(CommandFailed) as failure:
        runner.run(["sh", "-c", "echo using s3cr3t-token >&2; exit 3"], timeout=10)
    assert "s3cr3t-token" not in str(failure.value) and REDACTED in str(failure.value)
    with pytest.raises(CommandFailed, match="timed out after 1s"):
        runner.run(["sleep", "5"], timeout=1)


def test_runner_adds_the_private_kubeconfig_to_kubectl_and_helm_only(tmp_path: Path) -> None:
    runner = Runner(kubeconfig=tmp_path / "kc")
    assert runner.with_kubeconfig(["kubectl", "get", "pods"])[:3] == ["kubectl", "--kubeconfig", str(tmp_path / "kc")]
    assert runner.with_kubeconfig(["kind", "get", "clusters"]) == ["kind", "get", "clusters"]


def test_reconfigure_derives_kong_yaml_with_only_the_overrides_changed() -> None:
    from otelgate import kongconfig

    original = kongconfig.load(MANIFESTS / PATHS.kong_config)
    derived = kind.derive_cluster_kong_config(MANIFESTS, StackSettings(sampling_rate=0.1))
    diff = kongconfig.config_diff(original, derived)
    assert diff and all("plugins[opentelemetry].config.sampling_rate" in line for line in diff), diff


def test_collector_fault_drops_processors_from_every_pipeline() -> None:
    cr = ka.collector_resource(MANIFESTS, ("cumulative_to_delta",))
    pipelines = cr["spec"]["config"]["service"]["pipelines"]
    assert all("cumulative_to_delta" not in p.get("processors", []) for p in pipelines.values())
    assert any("batch" in p.get("processors", []) for p in pipelines.values())


def test_token_is_generated_once_per_cluster_and_private(tmp_path: Path) -> None:
    options = kind.KindOptions(workdir=tmp_path, state_dir=tmp_path)
    first = kind._read_or_create_token(options)
    assert kind._read_or_create_token(options) == first
    assert (tmp_path / "dt-api-token").stat().st_mode & 0o077 == 0


def test_external_stack_requires_kubeconfig_and_image(tmp_path: Path) -> None:
    with pytest.raises(kind.StackStartError, match="--kubeconfig"):
        external.ExternalStack(kind.KindOptions(workdir=tmp_path, state_dir=tmp_path, external=True,
                                                sink_image="x:1"))
    with pytest.raises(kind.StackStartError, match="--sink-image"):
        external.ExternalStack(kind.KindOptions(workdir=tmp_path, state_dir=tmp_path, external=True,
                                                kubeconfig=tmp_path / "kc"))


def test_kind_stack_satisfies_the_stack_protocol(tmp_path: Path) -> None:
    from otelgate.stacks.base import Stack

    stack = kind.KindStack(kind.KindOptions(workdir=tmp_path, state_dir=tmp_path))
    assert isinstance(stack, Stack)
    assert stack.kong_deployment_name == "kong-kind"
    assert stack.gateway_url == "http://127.0.0.1:18080"


def test_options_come_from_stack_options_then_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("OTELGATE_KIND_CLUSTER", "from-env")
    monkeypatch.setenv("OTELGATE_SINK_IMAGE", "reg/env:1")
    options = kind.KindOptions.from_stack_options(StackOptions(keep=True, manifests=MANIFESTS))
    assert (options.cluster_name, options.sink_image, options.keep) == ("from-env", "reg/env:1", True)
    options = kind.KindOptions.from_stack_options(StackOptions(cluster_name="given", kubeconfig=tmp_path / "kc"),
                                                  external=True)
    assert (options.cluster_name, options.kubeconfig, options.external) == ("given", tmp_path / "kc", True)
    assert options.manifests == paths.manifests_dir()


def test_check_prerequisites_through_the_cli(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "otelgate", "up", "--stack", "kind", "--check-prerequisites"],
                            capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
                            env={"PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode == 1
    for tool in ("docker", "kind", "kubectl", "helm"):
        assert f"missing: {tool}: not on PATH; install:" in result.stderr, result.stderr


K8S_USER_TEST = '''
import pytest

@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    class FakeClusterStack:
        name = "kind"
        kubeconfig = tmp_path_factory.mktemp("state") / "kubeconfig"
    FakeClusterStack.kubeconfig.write_text("apiVersion: v1\\nkind: Config\\nclusters: []\\n")
    return FakeClusterStack()

def test_uses_k8s(k8s, stack):
    from pytest_kubernetes.providers.base import AClusterManager
    assert isinstance(k8s, AClusterManager)
    assert k8s.kubeconfig.read_text() == stack.kubeconfig.read_text()
    assert k8s.kubeconfig != stack.kubeconfig

def test_stack_kubeconfig_survives_the_previous_test(stack):
    assert stack.kubeconfig.exists()
'''


def test_k8s_fixture_is_pytest_kubernetes_bound_to_the_stack(tmp_path: Path) -> None:
    """With --stack kind|external a user's test gets pytest-kubernetes' manager for the stack's cluster (not a new
    cluster), through a copy of the kubeconfig: pytest-kubernetes deletes a manager's kubeconfig after each test
    (pytest_kubernetes/plugin.py@0.9.0:41-45, providers/base.py@0.9.0:287-294)."""
    (tmp_path / "test_user.py").write_text(K8S_USER_TEST)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                             "--stack", "kind", "test_user.py"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_e2e_workflow_uploads_where_the_kind_stack_writes_its_diagnostics(tmp_path: Path) -> None:
    """The pytest plugin gives the kind stack the workdir artifacts/kind-stack/<run>; a failed bring-up writes its
    diagnostics below it, failed suites into artifacts/stack-diagnosis."""
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "e2e.yml").read_text())
    steps = workflow["jobs"]["e2e"]["steps"]
    upload = next(s for s in steps if s.get("name") == "Upload diagnostics")
    assert upload["if"] == "failure()"
    uploaded = upload["with"]["path"].split()
    assert "artifacts/kind-stack/" in uploaded and "artifacts/stack-diagnosis/" in uploaded
    workdir = tmp_path / "artifacts" / "kind-stack" / "run1"
    stack = kind.KindStack(kind.KindOptions(workdir=workdir, state_dir=tmp_path / "state"))
    folder = stack._diagnose_quietly()
    assert isinstance(folder, Path) and folder.is_relative_to(workdir), folder
