"""The docker stack, verified without Docker: the container specs it would start (image, env, files, ports, network
aliases, readiness) checked against the manifests, the derived collector config run through ``<collector>
validate``, and the ``otelgate up --stack docker`` dry run and prerequisites check run as a user would.

Nothing here starts a container: this repository's CI has no Docker engine. What these tests cannot show (that the
images start and serve) is said plainly in docs/docker.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelgate import kongconfig
from otelgate.collector import CollectorNotFound, find_collector, load_collector_resource, resource_config, validate
from otelgate.collector.config import rewritten_by
from otelgate.collector.process import missing_env
from otelgate.collector.testing import collector_required
from otelgate.configdiff import changes
from otelgate.demoapp.launch import Instrumentation
from otelgate.stacks.base import StackSettings, StackStartError
from otelgate.stacks.docker import cli as docker_cli
from otelgate.stacks.docker import daemon
from otelgate.stacks.docker import evidence as kong_evidence
from otelgate.stacks.docker import specs as ds
from otelgate.stacks.docker.stack import DockerStack
from otelgate.waiting import poll_until

REPO = Path(__file__).resolve().parents[1]
EXPECTED_ORDER = ["sink", "collector", "membership", "coupon", "inventory", "pricing", "kong"]
# seconds to wait for a collector that another job is still building (below the suite's 300 s test timeout)
COLLECTOR_BUILD_WAIT = 240.0


@pytest.fixture(scope="module")
def specs() -> list[ds.ContainerSpec]:
    return ds.container_specs()


def spec(specs: list[ds.ContainerSpec], name: str) -> ds.ContainerSpec:
    return ds.spec_by_name(specs, name)


def kong_doc(specs: list[ds.ContainerSpec]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(spec(specs, "kong").file(ds.KONG_DECLARATIVE_PATH).content)
    return doc


def collector_doc(specs: list[ds.ContainerSpec]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(spec(specs, "collector").file(ds.COLLECTOR_CONFIG_PATH).content)
    return doc


# --- what runs ------------------------------------------------------------------------------------------------------


def test_the_stack_is_the_whole_pipeline_in_start_order(specs: list[ds.ContainerSpec]) -> None:
    assert [s.name for s in specs] == EXPECTED_ORDER
    aliases = [alias for s in specs for alias in s.aliases]
    assert len(aliases) == len(set(aliases)), f"network aliases must be unique: {aliases}"
    for s in specs:
        assert s.name in s.aliases, f"{s.name}: its network alias must be its name (the configs use it)"


def test_every_image_is_pinned(specs: list[ds.ContainerSpec]) -> None:
    for s in specs:
        name, _, tag = s.image.rpartition(":")
        assert name and tag and "/" not in tag, f"{s.name}: image {s.image!r} has no explicit tag"
        assert tag != "latest", f"{s.name}: image {s.image!r} floats on :latest"


def test_kong_is_the_clusters_kong_image() -> None:
    values = yaml.safe_load((REPO / "manifests" / "kong" / "values.yaml").read_text())
    image, _env = ds.kong_image_and_env()
    assert image == f"{values['image']['repository']}:{values['image']['tag']}"
    assert image.startswith("kong:3.9"), "the issue pins Kong's official image at 3.9"


def test_collector_image_is_the_resources_contrib_image(specs: list[ds.ContainerSpec]) -> None:
    resource = load_collector_resource(ds.COLLECTOR_YAML)
    image = spec(specs, "collector").image
    assert image == resource["spec"]["image"], "the docker stack must run the collector release the cluster runs"
    assert "opentelemetry-collector-contrib:" in image, "contrib: tcp_log, prometheus and the processors are in it"
    assert re.fullmatch(r"\d+\.\d+\.\d+", image.rpartition(":")[2]), f"{image}: pin a release, not a moving tag"


def test_sink_and_demo_services_use_the_project_image(specs: list[ds.ContainerSpec]) -> None:
    from otelgate.sinkimage import sink_image_tag

    if os.environ.get("OTELGATE_SINK_IMAGE"):
        pytest.skip("OTELGATE_SINK_IMAGE overrides the built image")
    tag = sink_image_tag(REPO)
    for name in ("sink", *ds.DEMO_SERVICES):
        s = spec(specs, name)
        assert s.image == tag, f"{name}: expected the kind stack's content-hashed sink tag {tag}, got {s.image}"
        assert s.build is not None and s.build.context == REPO and (REPO / s.build.dockerfile).is_file()


def test_a_given_sink_image_is_used_as_is_and_never_built() -> None:
    """``--sink-image`` (StackOptions.sink_image) names a built image: every container of the project's image runs it
    and nothing is built; the dry run says where it came from."""
    ref = "registry.example/otelgate-sink:given"
    for name in ("sink", *ds.DEMO_SERVICES):
        s = spec(ds.container_specs(sink_image_ref=ref), name)
        assert (s.image, s.build) == (ref, None), name
    plan = docker_cli.plan(sink_image=ref)
    assert any(ref in line and "not built" in line for line in plan), plan


def test_the_image_provides_what_the_commands_run(specs: list[ds.ContainerSpec]) -> None:
    """The sink's command relies on the Dockerfile's ENTRYPOINT; the demo services on the instrumentation wrapper
    being installed with the project (``pip install .`` in the Dockerfile)."""
    dockerfile = (REPO / "Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.MULTILINE)
    assert entrypoint and json.loads(entrypoint.group(1)) == ["otelgate"]
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE), "the image must install the project"
    sink_command = spec(specs, "sink").command
    assert sink_command is not None and sink_command[0] == "sink"
    deps = "\n".join(_pyproject_dependencies())
    for package in ("opentelemetry-distro", "opentelemetry-instrumentation", "opentelemetry-instrumentation-flask",
                    "opentelemetry-exporter-otlp-proto-http", "flask"):
        assert re.search(rf"^{re.escape(package)}\b", deps, re.MULTILINE | re.IGNORECASE), package


def _pyproject_dependencies() -> list[str]:
    import tomllib

    deps: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return deps


# --- Kong ---------------------------------------------------------------------------------------------------------


def test_kong_loads_kong_yaml_changed_only_at_the_documented_rewrites(specs: list[ds.ContainerSpec]) -> None:
    original = kongconfig.load(ds.KONG_YAML)
    mounted = kong_doc(specs)
    diff = kongconfig.config_diff(original, mounted)
    assert diff, "the container config must differ from kong.yaml at least at the cluster DNS names"
    assert [p for p in diff if not kongconfig.is_rewrite(p)] == []
    assert {s["name"]: s["url"] for s in mounted["services"]} == {
        name: f"http://{name}:8080" for name in ds.GATEWAY_SERVICES}
    plugins = {p["name"]: p["config"] for p in mounted["plugins"]}
    ports = ds.collector_ports_in_resource(load_collector_resource(ds.COLLECTOR_YAML))
    assert plugins["opentelemetry"]["traces_endpoint"] == f"http://collector:{ports.otlp_http}/v1/traces"
    assert (plugins["tcp-log"]["host"], plugins["tcp-log"]["port"]) == ("collector", ports.tcplog)
    # the real Lua snippet goes to real Kong unchanged
    original_plugins = {p["name"]: p["config"] for p in original["plugins"]}
    assert plugins["tcp-log"]["custom_fields_by_lua"] == original_plugins["tcp-log"]["custom_fields_by_lua"]
    env = spec(specs, "kong").env
    assert env["KONG_DECLARATIVE_CONFIG"] == ds.KONG_DECLARATIVE_PATH
    assert env["KONG_DATABASE"] == "off"


def test_kong_overrides_change_only_their_keys() -> None:
    overrides = {"tcp-log": {"custom_fields_by_lua": None}}
    settings = StackSettings(sampling_rate=0.25, tracing_sampling_rate=0.5, kong_plugin_config=overrides)
    specs = ds.container_specs(settings)
    mounted = kong_doc(specs)
    diff = kongconfig.config_diff(kongconfig.load(ds.KONG_YAML), mounted)
    everything: dict[str, dict[str, Any]] = {**overrides, "opentelemetry": {"sampling_rate": 0.25}}
    assert [p for p in diff if not kongconfig.is_rewrite(p, everything)] == []
    assert "plugins[opentelemetry].config.sampling_rate" in diff
    assert "plugins[tcp-log].config.custom_fields_by_lua" in diff
    plugins = {p["name"]: p["config"] for p in mounted["plugins"]}
    assert plugins["opentelemetry"]["sampling_rate"] == 0.25
    assert "custom_fields_by_lua" not in plugins["tcp-log"]
    assert spec(specs, "kong").env["KONG_TRACING_SAMPLING_RATE"] == "0.5"


def test_kong_env_is_the_helm_values_env_plus_the_documented_docker_keys(specs: list[ds.ContainerSpec]) -> None:
    _image, values_env = ds.kong_image_and_env()
    env = dict(spec(specs, "kong").env)
    from_settings = {"KONG_TRACING_SAMPLING_RATE": "1.0", "KONG_TRACING_INSTRUMENTATIONS": "all",
                     "KONG_DATABASE": "off"}
    assert env == {**values_env, **ds.KONG_DOCKER_ENV, **from_settings}
    assert values_env["KONG_TRACING_INSTRUMENTATIONS"] == "all", "the chart and the docker stack must agree"
    assert values_env["KONG_DATABASE"] == "off"
    assert env["KONG_STATUS_LISTEN"] == "0.0.0.0:8100"
    assert env["KONG_ADMIN_LISTEN"] == "0.0.0.0:8001", "reconfigure() needs the Admin API on the network"
    assert [p.port for p in spec(specs, "kong").ports if p.published] == [8000, 8001, 8100]
    assert spec(specs, "kong").wait.port == 8100 and spec(specs, "kong").wait.path == "/status/ready"
    assert kong_evidence.worker_count(env) == 1, "reconfigure() counts one 'reconfigure took' line per worker"


# --- the collector --------------------------------------------------------------------------------------------------


def _changed_paths(before: Any, after: Any) -> list[tuple[str | int, ...]]:
    return [change.path for change in changes(before, after)]


def test_collector_config_is_the_resource_changed_only_at_rewrites(specs: list[ds.ContainerSpec]) -> None:
    resource_cfg = resource_config(load_collector_resource(ds.COLLECTOR_YAML))
    mounted = collector_doc(specs)
    changed = _changed_paths(resource_cfg, mounted)
    assert changed, "pod discovery and the exporter endpoint must have been rewritten"
    assert [p for p in changed if rewritten_by(p) is None] == []
    # in a container the listen addresses are the resource's own (0.0.0.0:<port>), so only these three differ
    assert sorted(".".join(map(str, p)) for p in changed) == [
        "exporters.otlp_http/dynatrace.endpoint",
        "receivers.prometheus.config.scrape_configs.0.kubernetes_sd_configs",
        "receivers.prometheus.config.scrape_configs.0.static_configs",
    ]
    scrape = mounted["receivers"]["prometheus"]["config"]["scrape_configs"][0]
    assert [t for group in scrape["static_configs"] for t in group["targets"]] == ["kong:8100"]
    assert mounted["exporters"]["otlp_http/dynatrace"]["endpoint"] == "http://sink:8080/api/v2/otlp"


def test_collector_faults_come_from_the_settings() -> None:
    settings = StackSettings(drop_processors=("cumulative_to_delta",), exporter_token="wrong")
    mounted = collector_doc(ds.container_specs(settings))
    pipelines = mounted["service"]["pipelines"]
    assert all("cumulative_to_delta" not in (p.get("processors") or []) for p in pipelines.values())
    assert mounted["exporters"]["otlp_http/dynatrace"]["headers"]["Authorization"] == "Api-Token wrong"


def test_collector_env_covers_every_env_reference(specs: list[ds.ContainerSpec]) -> None:
    collector = spec(specs, "collector")
    provided = {**collector.env, **{name: "x" for name in collector.secret_env}}
    assert missing_env(collector_doc(specs), provided) == []
    assert collector.secret_env == (ds.TOKEN_ENV,) and ds.TOKEN_ENV not in collector.env
    assert ds.kong_deployment_name(collector) == collector.env["KONG_DEPLOYMENT_NAME"] == "kong-docker"
    resource_env = {e["name"] for e in load_collector_resource(ds.COLLECTOR_YAML)["spec"]["env"]}
    assert resource_env - {"DT_ENDPOINT"} <= set(provided), "every env of the resource but the rewritten endpoint"


def test_listen_addresses_go_back_to_all_interfaces_only_at_rewritten_keys() -> None:
    config = {"receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:4318"}}},
                            "other": {"endpoint": "127.0.0.1:9999"}},
              "service": {"telemetry": {"metrics": {"readers": [
                  {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": 8888}}}}]}}}}
    out = ds._listen_on_all_interfaces(config)
    assert out["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    assert out["receivers"]["other"]["endpoint"] == "127.0.0.1:9999", "a key outside REWRITES is never touched"
    assert out["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]["host"] == "0.0.0.0"


def _collector_binary() -> Path:
    """The collector binary; in CI / with OTELGATE_REQUIRE_COLLECTOR=1 wait for a build still under way."""
    if not collector_required():
        try:
            return find_collector()
        except CollectorNotFound as exc:
            pytest.skip(f"no collector binary (OTELGATE_REQUIRE_COLLECTOR=1 or CI makes this a failure): {exc}")
    found = poll_until(_find_or_none, lambda path: path is not None,
                       what="otelgate.collector.find_collector() to find the collector binary (a build may "
                            "still be running)", timeout=COLLECTOR_BUILD_WAIT, interval=2.0)
    assert found is not None
    return found


def _find_or_none() -> Path | None:
    try:
        return find_collector()
    except CollectorNotFound:
        return None


def test_collector_config_passes_collector_validate(specs: list[ds.ContainerSpec], tmp_path: Path) -> None:
    """``<collector> validate`` with otelgate's own build (the container runs the resource's contrib release; the
    resource states that every component and key loads unchanged in both)."""
    binary = _collector_binary()
    collector = spec(specs, "collector")
    env = {**collector.env, **{name: "dt0c01.STATIC.VALIDATION" for name in collector.secret_env}}
    result = validate(binary, collector_doc(specs), env=env, workdir=tmp_path)
    assert result.returncode == 0, f"{binary} validate rejected the docker stack's config:\n{result.stderr[-4000:]}"


# --- the network: every endpoint names another container and a port it exposes -----------------------------------

_URL = re.compile(r"^(?:https?|grpc)://([A-Za-z0-9_.-]+):(\d+)(?:/.*)?$")
_HOST_PORT = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*):(\d+)$")


def endpoints(s: ds.ContainerSpec) -> Iterator[tuple[str, str, int]]:
    """``(where, host, port)`` for every address in the container's env and files (listen addresses excluded)."""
    sources: list[tuple[str, Any]] = [(f"env {key}", value) for key, value in s.env.items()]
    sources += [(f"file {item.target}", yaml.safe_load(item.content)) for item in s.files]
    for where, node in sources:
        yield from _walk(where, node)


def _walk(where: str, node: Any) -> Iterator[tuple[str, str, int]]:
    if isinstance(node, dict):
        host = node.get("host")
        if isinstance(host, str) and host != "0.0.0.0" and isinstance(node.get("port"), int):  # tcp-log's pair
            yield (f"{where} host/port", node["host"], node["port"])
        for key, value in node.items():
            yield from _walk(f"{where}.{key}", value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(f"{where}[{index}]", value)
    elif isinstance(node, str):
        match = _URL.match(node.strip()) or _HOST_PORT.match(node.strip())
        if match and match.group(1) != "0.0.0.0":
            yield (where, match.group(1), int(match.group(2)))


def test_every_endpoint_names_another_container_and_a_port_it_exposes(specs: list[ds.ContainerSpec]) -> None:
    by_alias = {alias: s for s in specs for alias in s.aliases}
    found: dict[str, list[tuple[str, str, int]]] = {s.name: list(endpoints(s)) for s in specs}
    problems = []
    for s in specs:
        for where, host, port in found[s.name]:
            target = by_alias.get(host)
            if target is None:
                problems.append(f"{s.name} {where}: {host}:{port} is not a container on the network")
            elif target is s:
                problems.append(f"{s.name} {where}: {host}:{port} points at itself")
            elif port not in {p.port for p in target.ports}:
                problems.append(f"{s.name} {where}: {target.name} exposes {[p.port for p in target.ports]}, "
                                f"not {port}")
    assert problems == []
    # the check saw the connections the pipeline needs (it cannot pass on configs it failed to read)
    seen = {(s, host) for s, items in found.items() for _where, host, _port in items}
    assert {("kong", "coupon"), ("kong", "inventory"), ("kong", "pricing"), ("kong", "collector"),
            ("collector", "kong"), ("collector", "sink"), ("coupon", "membership")} <= seen
    assert all(("collector" in {h for _w, h, _p in found[name]}) for name in ds.DEMO_SERVICES)
    kong_to_collector = {p for _w, h, p in found["kong"] if h == "collector"}
    assert len(kong_to_collector) == 2, f"traces (OTLP/HTTP) and tcp-log go to two collector ports: {kong_to_collector}"


def test_no_cluster_dns_name_is_left_in_any_container(specs: list[ds.ContainerSpec]) -> None:
    for s in specs:
        texts = [*s.env.values(), *(item.content for item in s.files)]
        leftovers = [t for t in texts if ".svc.cluster.local" in t or ".svc:" in t]
        assert leftovers == [], f"{s.name} still names a Kubernetes Service"


def test_collector_listens_exactly_on_its_exposed_ports(specs: list[ds.ContainerSpec]) -> None:
    collector = spec(specs, "collector")
    config = collector_doc(specs)
    listen = list(_listen_values(config))
    assert all(host == "0.0.0.0" for host, _port in listen), f"a container must listen on all interfaces: {listen}"
    assert sorted(port for _host, port in listen) == sorted(p.port for p in collector.ports)


def _listen_values(config: dict[str, Any]) -> Iterator[tuple[str, int]]:
    receivers = config["receivers"]
    for proto in receivers["otlp"]["protocols"].values():
        host, port = proto["endpoint"].rsplit(":", 1)
        yield host, int(port)
    host, port = receivers["tcp_log"]["listen_address"].rsplit(":", 1)
    yield host, int(port)
    host, port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)
    yield host, int(port)
    host, port = config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)
    yield host, int(port)
    for reader in config["service"]["telemetry"]["metrics"]["readers"]:
        prom = reader["pull"]["exporter"]["prometheus"]
        yield prom["host"], int(prom["port"])


def test_readiness_means_serving(specs: list[ds.ContainerSpec]) -> None:
    expected = {"sink": "/healthz", "collector": "/", "kong": "/status/ready",
                **{name: "/healthz" for name in ds.DEMO_SERVICES}}
    for s in specs:
        assert s.wait.path == expected[s.name], s.name
        assert s.wait.status == 200
        assert s.port(s.wait.port).published, f"{s.name}: the wait needs its port mapped to the host"
    collector = spec(specs, "collector")
    health = collector_doc(specs)["extensions"]["health_check"]["endpoint"]
    assert health.endswith(f":{collector.wait.port}"), "the collector wait must probe its health_check extension"


# --- demo services ----------------------------------------------------------------------------------------------------


def test_demo_services_run_under_opentelemetry_instrument(specs: list[ds.ContainerSpec]) -> None:
    for name in ds.DEMO_SERVICES:
        s = spec(specs, name)
        assert s.entrypoint == ("opentelemetry-instrument",)
        assert s.command == ("python", "-m", "otelgate.demoapp", name, "--host", "0.0.0.0", "--port", "8080")
        expected = Instrumentation.from_manifest("http://collector:4318").env(name, base_env={})
        expected.pop("PYTHONPATH")
        if name == "coupon":
            expected["MEMBERSHIP_SERVICE_HOST"] = "membership:8080"
        assert dict(s.env) == expected
        leaks = [v for v in s.env.values() if str(REPO) in v or sys.prefix in v]
        assert leaks == [], f"{name}: host paths mean nothing inside the container: {leaks}"


# --- secrets, dry run, prerequisites ---------------------------------------------------------------------------------


def test_the_token_is_never_part_of_a_spec(specs: list[ds.ContainerSpec]) -> None:
    for s in specs:
        assert ds.TOKEN_ENV not in s.env
        assert all(ds.TOKEN_ENV not in item.content or "${env:" + ds.TOKEN_ENV + "}" in item.content
                   for item in s.files)
    assert spec(specs, "sink").secret_env == (ds.TOKEN_ENV,)


def test_dry_run_prints_every_container_completely() -> None:
    settings = StackSettings(sampling_rate=0.5, tracing_sampling_rate=0.25)
    result = subprocess.run([sys.executable, "-m", "otelgate", "up", "--stack", "docker", "--dry-run",
                             "--sampling-rate", "0.5", "--tracing-sampling-rate", "0.25"],
                            capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for s in ds.container_specs(settings):
        block = _block(out, s.name)
        assert f"image: {s.image}" in block
        assert f"network alias: {', '.join(s.aliases)}" in block
        for key, value in s.env.items():
            assert f"{key}={value}" in block, f"{s.name}: env {key} missing from the dry run"
        for key in s.secret_env:
            assert f"{key}={ds.SECRET_PLACEHOLDER}" in block
        for item in s.files:
            assert f"file: {item.target} <- <workdir>/config/{item.host_name}" in block
        for port in s.ports:
            assert f"port: {port.port}/tcp {port.purpose}" in block
        assert f"ready when: GET {s.wait.path} on container port {s.wait.port}" in block
        if s.command:
            assert f"command: {' '.join(s.command)}" in block
        if s.entrypoint:
            assert f"entrypoint: {' '.join(s.entrypoint)}" in block
    assert "KONG_TRACING_SAMPLING_RATE=0.25" in out
    assert "plugins[opentelemetry].config.sampling_rate: 0.5" in out
    assert "NOT A DOCUMENTED REWRITE" not in out
    assert "canary: GET /coupon/coupons" in out
    assert "network otelgate-<run id>" in out


def _block(out: str, name: str) -> str:
    match = re.search(rf"^\d+\. container {re.escape(name)}: .*?(?=^\d+\. |\Z)", out, re.MULTILINE | re.DOTALL)
    assert match, f"no container block for {name} in the dry run:\n{out}"
    return match.group(0)


def test_check_prerequisites_names_an_unreachable_daemon(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    socket_path = tmp_path / "no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    problems = docker_cli.check_prerequisites()
    daemon = [p for p in problems if "no reachable Docker daemon" in p]
    assert len(daemon) == 1, problems
    assert str(socket_path) in daemon[0] and "DOCKER_HOST" in daemon[0]


def test_otelgate_up_check_prerequisites_fails_clearly_without_docker(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"}
    result = subprocess.run([sys.executable, "-m", "otelgate", "up", "--stack", "docker", "--check-prerequisites"],
                            capture_output=True, text=True, timeout=120, cwd=REPO, env=env, check=False)
    assert result.returncode == 1
    assert "missing: no reachable Docker daemon" in result.stderr
    assert "docker stack prerequisites:" in result.stdout


def test_start_without_a_daemon_fails_fast_and_leaves_diagnostics(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The one part of the runtime that runs here: a bring-up with no Docker daemon stops at once, says why and
    where it looked, and still leaves the derived configs and a summary to read."""
    socket_path = tmp_path / "no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    stale = tmp_path / "stack" / "logs" / "otelgate-earlier-kong.log"
    stale.parent.mkdir(parents=True)
    stale.write_text("an earlier run's log\n")
    started = time.monotonic()
    with pytest.raises(StackStartError, match="no reachable Docker daemon") as failure:
        DockerStack.start(workdir=tmp_path / "stack")
    assert time.monotonic() - started < 30
    assert str(socket_path) in str(failure.value)
    assert not stale.exists(), "a reused workdir must not mix an earlier run's logs into this run's diagnostics"
    diagnostics = tmp_path / "stack" / "diagnostics"
    assert (diagnostics / "summary.txt").is_file()
    assert sorted(p.name for p in (diagnostics / "config").iterdir()) == ["collector.yaml", "kong.yaml"]
    kong_copy = yaml.safe_load((diagnostics / "config" / "kong.yaml").read_text())
    assert kong_copy == kong_doc(ds.container_specs())


def test_daemon_check_without_the_docker_sdk_uses_the_engine_ping(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``nox -s tests`` has no docker SDK: the check then speaks the Engine API's ``GET /_ping`` itself."""
    import http.server
    import socketserver
    import threading

    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/_ping" else 404
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

        def get_request(self) -> tuple[Any, Any]:
            request, _ = super().get_request()
            return request, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port) client address

    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` raises ImportError
    socket_path = tmp_path / "d.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    assert daemon.ping_daemon() is not None, "nothing listens yet: the check must say so"
    server = UnixHTTPServer(str(socket_path), Ping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert daemon.ping_daemon() is None
        assert daemon.daemon_problem() is None
    finally:
        server.shutdown()
        server.server_close()


def test_the_canary_is_sampled_at_every_rate_above_zero() -> None:
    """Kong's ratio sampler (docs/reference/kong-3.9.md#ratio-sampler): sampled iff the first 8 bytes,
    little-endian, < rate * 2**64."""
    for _ in range(50):
        trace_id, traceparent = kong_evidence.canary_traceparent()
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", traceparent)
        assert traceparent.split("-")[1] == trace_id and int(trace_id, 16) != 0
        first8 = int.from_bytes(bytes.fromhex(trace_id)[:8], "little")
        assert first8 < 1e-12 * 2**64


def test_effective_sampling_rate_follows_kong() -> None:
    default = StackSettings(tracing_sampling_rate=0.3)
    assert ds.effective_sampling_rate(default, spec(ds.container_specs(default), "kong")) == 0.3
    plugin = StackSettings(sampling_rate=0.0, tracing_sampling_rate=1.0)
    assert ds.effective_sampling_rate(plugin, spec(ds.container_specs(plugin), "kong")) == 0.0


# Kong's own lines (format of a 3.x error log at level info), as reconfigure() reads them
_RELOADED = ("2026/11/25 09:31:51 [info] 1267#0: *4 [lua] events.lua:226: declarative reconfigure took 5 ms on "
             "worker #0, context: ngx.timer")
_FAILED = ("2026/11/25 09:31:52 [error] 1267#0: *4 [lua] events.lua:231: declarative reconfigure failed after 3 ms "
           "on worker #0: boom, context: ngx.timer")


def test_reconfigure_counts_only_reloads_after_the_post() -> None:
    before = "\n".join([_RELOADED, "[info] unrelated"])
    evidence = kong_evidence.ReloadEvidence.of(before)
    assert evidence.workers_applied(before) == 0, "a reload before the POST must not count"
    assert evidence.workers_applied(before + "\n" + _RELOADED) == 1


def test_reconfigure_fails_on_a_new_reload_failure_only() -> None:
    old_failure = "\n".join([_FAILED, _RELOADED])
    evidence = kong_evidence.ReloadEvidence.of(old_failure)
    assert evidence.workers_applied(old_failure + "\n" + _RELOADED) == 1, "an old failure must not fail a new POST"
    with pytest.raises(kong_evidence.KongReloadFailed, match="boom"):
        evidence.workers_applied(old_failure + "\n" + _FAILED)
