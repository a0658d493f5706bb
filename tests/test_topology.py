"""The deployment's topology is data (manifests/otelgate.toml, read by otelgate.topology only): the shipped file
agrees with the manifests beside it, bad files are refused with a line naming the key, and a changed file changes
what otelgate does — through the loader, the load test's routes and the pytest plugin's --otelgate-manifests."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from otelgate import paths, topology
from otelgate.topology import TopologyError

pytest_plugins = ["pytester"]


def shipped() -> topology.Topology:
    return topology.load(paths.DEFAULT_MANIFESTS / paths.TOPOLOGY_FILE)


def yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


# --- the shipped file agrees with the manifests (read here with plain YAML, not through otelgate's loaders) ---------

def test_shipped_topology_names_the_demo() -> None:
    topo = shipped()
    assert topo.route_for("traces").service_path == ("kong-otel", "coupon", "membership")
    assert topo.canary_path == "/coupon/coupons"
    assert set(topo.gateway_services) < set(topo.demo_services)
    assert topo.deployment_name("local") != topo.deployment_name("docker")


def test_shipped_routes_are_routes_of_kong_yaml() -> None:
    topo = shipped()
    kong = yaml.safe_load((paths.DEFAULT_MANIFESTS / "kong" / "kong.yaml").read_text())
    routes = {r["name"]: (s["name"], r["paths"]) for s in kong["services"] for r in s.get("routes", [])}
    for route in topo.routes.values():
        service, prefixes = routes[route.kong_route]
        assert any(route.path.startswith(prefix) for prefix in prefixes), (route, prefixes)
        assert route.service_path[1] == service, f"{route.name}: Kong routes {route.kong_route} to {service}"
    otel = next(p for p in kong["plugins"] if p["name"] == "opentelemetry")
    assert otel["config"]["resource_attributes"]["service.name"] == topo.kong_service_name


def test_shipped_deployment_attribute_is_what_the_collector_inserts() -> None:
    topo = shipped()
    (collector,) = [d for d in yaml_docs(paths.DEFAULT_MANIFESTS / "otel" / "collector.yaml")
                    if d.get("kind") == "OpenTelemetryCollector"]
    actions = [a for name, proc in collector["spec"]["config"]["processors"].items() if name.startswith("attributes")
               for a in proc.get("actions", [])]
    assert {"key": topo.deployment_attribute, "value": f"${{env:{topo.deployment_env}}}", "action": "insert"} in actions
    exporter_text = yaml.safe_dump(collector["spec"]["config"]["exporters"])
    assert f"${{env:{topo.token_env}}}" in exporter_text


def test_shipped_demo_services_are_the_apps_deployments() -> None:
    names = {d["metadata"]["name"] for d in yaml_docs(paths.DEFAULT_MANIFESTS / "app" / "simple-demo.yaml")
             if d.get("kind") == "Deployment"}
    assert set(shipped().demo_services) <= names


# --- bad files are refused, each with the key at fault ----------------------------------------------------------

def write(tmp_path: Path, change: dict[str, str]) -> Path:
    text = (paths.DEFAULT_MANIFESTS / paths.TOPOLOGY_FILE).read_text()
    for old, new in change.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / paths.TOPOLOGY_FILE
    path.write_text(text)
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({'service_name = "kong-otel"': ""}, r"kong\.service_name is missing"),
    ({'token_env = "DT_API_TOKEN"': 'token_env = "DT_API_TOKEN"\ntoken_envv = "X"'}, r"unknown key.*token_envv"),
    ({'traces = "coupon"': 'traces = "checkout"'}, r"claims\.traces = 'checkout' names no route"),
    ({'canary_route = "coupon"': 'canary_route = "nope"'}, r"canary_route = 'nope' names no route"),
    ({'path = "/inventory"': 'path = "inventory"'}, r"routes\.inventory\.path must start with '/'"),
    ({'upstream_path = ["pricing"]': "upstream_path = []"}, r"routes\.pricing\.upstream_path must be a non-empty"),
    ({'gateway = ["coupon", "inventory", "pricing"]': 'gateway = ["coupon", "billing"]'}, r"\['billing'\] not in"),
    ({"[metrics]": "[metrics"}, r"not valid TOML"),
])
def test_a_bad_topology_file_is_refused_with_the_key(tmp_path: Path, change: dict[str, str], message: str) -> None:
    path = write(tmp_path, change)
    with pytest.raises(TopologyError, match=message) as caught:
        topology.load(path)
    assert str(path) in str(caught.value)


def test_a_folder_without_topology_says_so(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"no topology file in the manifests folder"):
        topology.current(tmp_path)


# --- changing the data changes behaviour --------------------------------------------------------------------------

CHECKOUT_ROUTE = """
[routes.checkout]
kong_route = "checkout-route"
path = "/checkout/cart"
upstream_path = ["checkout", "payments"]
"""


def custom_manifests(manifests_copy: Path) -> Path:
    """The demo's manifests with a team's own trace route (checkout -> payments) and Kong service name."""
    path = manifests_copy / paths.TOPOLOGY_FILE
    text = path.read_text().replace('service_name = "kong-otel"', 'service_name = "edge-gateway"')
    text = text.replace('traces = "coupon"', 'traces = "checkout"').replace("[claims]", CHECKOUT_ROUTE + "\n[claims]")
    path.write_text(text)
    return manifests_copy


def test_current_reads_the_folder_in_force_and_rereads_a_changed_file(manifests_copy: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.MANIFESTS_ENV, str(manifests_copy))
    assert topology.current().route_for("traces").path == "/coupon/coupons"
    custom_manifests(manifests_copy)
    changed = topology.current()
    assert changed.route_for("traces").service_path == ("edge-gateway", "checkout", "payments")
    assert changed.route_for("metrics").service_path == ("edge-gateway", "pricing")
    monkeypatch.delenv(paths.MANIFESTS_ENV)
    assert topology.current().kong_service_name == "kong-otel"


def test_the_load_test_drives_the_routes_the_file_declares(manifests_copy: Path, tmp_path: Path) -> None:
    """loadtests reads its routes from the topology: a declared route becomes a valid weight, in a fresh process."""
    custom_manifests(manifests_copy)
    code = "import loadtests; print(loadtests.ROUTES['checkout'], loadtests.parse_weights('checkout=2'))"
    env = {"PATH": "/usr/bin:/bin", paths.MANIFESTS_ENV: str(manifests_copy)}
    done = subprocess.run([sys.executable, "-c", code], cwd=paths.CHECKOUT or Path.cwd(), env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "/checkout/cart {'checkout': 2.0}"


def test_the_plugin_option_selects_the_topology(pytester: pytest.Pytester, manifests_copy: Path) -> None:
    """--otelgate-manifests makes the claims read the team's file: the trace claim's route and service path."""
    custom_manifests(manifests_copy)
    pytester.makepyfile(test_inner=textwrap.dedent("""
        from otelgate import claims, paths

        def test_reads_the_team_topology():
            assert claims.TRACES_ROUTE.path == "/checkout/cart"
            assert claims.TRACE_PATH == ("edge-gateway", "checkout", "payments")
            assert paths.manifests_dir().name == "manifests"
    """))
    result = pytester.runpytest_subprocess(f"--otelgate-manifests={manifests_copy}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    missing = pytester.runpytest_subprocess(f"--otelgate-manifests={manifests_copy / 'nope'}")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    assert re.search(r"--otelgate-manifests .*nope: not a folder", missing.stderr.str()), missing.stderr.str()
