"""The local collector config is the cluster's config, changed only at the explicit REWRITES keys, and the real
collector binary accepts it (and refuses a typo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from otelgate.collector import (
    REWRITES,
    CollectorPorts,
    CollectorProcess,
    derive_local_config,
    load_collector_resource,
    local_env,
    resource_config,
    validate,
)
from otelgate.collector.config import rewritten_by
from otelgate.collector.testing import collector_binary_or_skip
from otelgate.configdiff import changes

SINK = "http://127.0.0.1:1/api/v2/otlp"
KONG_STATUS = "127.0.0.1:2"

Path_ = tuple[str | int, ...]


def changed_paths(before: Any, after: Any) -> set[Path_]:
    return {change.path for change in changes(before, after)}


@pytest.fixture(scope="module")
def resource() -> dict[str, Any]:
    return load_collector_resource()


@pytest.fixture
def ports() -> CollectorPorts:
    return CollectorPorts.allocate()


@pytest.fixture
def derived(resource: dict[str, Any], ports: CollectorPorts) -> dict[str, Any]:
    return derive_local_config(resource_config(resource), ports=ports, sink_endpoint=SINK,
                               kong_status_target=KONG_STATUS)


def test_derived_config_differs_from_the_resource_only_at_the_rewritten_keys(resource: dict[str, Any],
                                                                             derived: dict[str, Any]) -> None:
    changed = changed_paths(resource_config(resource), derived)
    assert changed, "the derivation changed nothing; the local run would listen on the cluster's addresses"
    unexplained = sorted(map(str, (path for path in changed if rewritten_by(path) is None)))
    assert unexplained == [], f"changed outside REWRITES: {unexplained}"
    used = {rewritten_by(path) for path in changed}
    unused = [rewrite.describe() for rewrite in REWRITES if rewrite not in used]
    assert unused == [], f"REWRITES that changed nothing (stale entries): {unused}"


def test_derived_config_listens_only_on_loopback_free_ports(derived: dict[str, Any], ports: CollectorPorts) -> None:
    text = yaml.safe_dump(derived)
    assert "0.0.0.0" not in text
    receivers, exporters = derived["receivers"], derived["exporters"]
    assert receivers["otlp"]["protocols"]["grpc"]["endpoint"] == f"127.0.0.1:{ports.otlp_grpc}"
    assert receivers["otlp"]["protocols"]["http"]["endpoint"] == f"127.0.0.1:{ports.otlp_http}"
    assert receivers["tcp_log"]["listen_address"] == f"127.0.0.1:{ports.tcplog}"
    assert exporters["prometheus"]["endpoint"] == f"127.0.0.1:{ports.prometheus_exporter}"
    assert derived["extensions"]["health_check"]["endpoint"] == f"127.0.0.1:{ports.health}"
    reader = derived["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert (reader["host"], reader["port"]) == ("127.0.0.1", ports.telemetry)
    assert len({getattr(ports, name) for name in ports.__dataclass_fields__}) == 6


def test_pod_discovery_becomes_the_kong_status_target_and_relabel_rules_stay(resource: dict[str, Any],
                                                                             derived: dict[str, Any]) -> None:
    cluster_job = resource_config(resource)["receivers"]["prometheus"]["config"]["scrape_configs"][0]
    local_job = derived["receivers"]["prometheus"]["config"]["scrape_configs"][0]
    assert "kubernetes_sd_configs" in cluster_job and "kubernetes_sd_configs" not in local_job
    assert local_job["static_configs"][0]["targets"] == [KONG_STATUS]
    assert local_job["relabel_configs"] == cluster_job["relabel_configs"]
    labels = local_job["static_configs"][0]["labels"]
    # the cluster's keep rules must select the static target, as they select Kong's pod
    for rule in cluster_job["relabel_configs"]:
        if rule.get("action") == "keep":
            (source,) = rule["source_labels"]
            assert labels[source] == rule["regex"], rule


def test_exporter_goes_to_the_sink_and_the_token_stays_in_the_environment(derived: dict[str, Any]) -> None:
    exporter = derived["exporters"]["otlp_http/dynatrace"]
    assert exporter["endpoint"] == SINK
    assert exporter["headers"]["Authorization"] == "Api-Token ${env:DT_API_TOKEN}"


def test_whole_resource_is_accepted_as_input(resource: dict[str, Any], ports: CollectorPorts,
                                             derived: dict[str, Any]) -> None:
    assert derive_local_config(resource, ports=ports, sink_endpoint=SINK, kong_status_target=KONG_STATUS) == derived


def test_fault_knobs(resource: dict[str, Any], ports: CollectorPorts) -> None:
    faulty = derive_local_config(resource_config(resource), ports=ports, sink_endpoint=SINK,
                                 kong_status_target=KONG_STATUS, drop_processors=("cumulative_to_delta",),
                                 exporter_token="wrong-token")
    for name, pipeline in faulty["service"]["pipelines"].items():
        assert "cumulative_to_delta" not in pipeline["processors"], name
    assert faulty["exporters"]["otlp_http/dynatrace"]["headers"]["Authorization"] == "Api-Token wrong-token"
    with pytest.raises(ValueError, match="not among the config's processors"):
        derive_local_config(resource_config(resource), ports=ports, sink_endpoint=SINK,
                            kong_status_target=KONG_STATUS, drop_processors=("cumulativetodelta_typo",))


def test_a_manifest_without_the_resource_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n")
    with pytest.raises(ValueError, match="exactly one OpenTelemetryCollector"):
        load_collector_resource(path)


def test_unset_environment_is_refused_before_start(derived: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"KONG_DEPLOYMENT_NAME"):
        CollectorProcess(Path("/bin/true"), derived, tmp_path, env={"DT_API_TOKEN": "t"})


def test_local_env_takes_the_resource_literal_env(resource: dict[str, Any]) -> None:
    env = local_env(resource, "token-value")
    assert env["KONG_DEPLOYMENT_NAME"] == "kong-kind"
    assert env["DT_API_TOKEN"] == "token-value"
    assert "DT_ENDPOINT" not in env  # a secret reference in the resource; locally the endpoint is rewritten


# ------------------------------------------------------------------------------------------------ real binary
@pytest.mark.collector
def test_binary_validates_the_derived_config(derived: dict[str, Any], resource: dict[str, Any],
                                             tmp_path: Path) -> None:
    result = validate(collector_binary_or_skip(), derived, env=local_env(resource, "t"), workdir=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.collector
def test_binary_validates_the_cluster_config_unchanged(resource: dict[str, Any], tmp_path: Path) -> None:
    """The build keeps Kubernetes discovery (build tag enable_kubernetes_sd), so the cluster's config loads as is."""
    result = validate(collector_binary_or_skip(), resource_config(resource),
                      env={**local_env(resource, "t"), "DT_ENDPOINT": SINK}, workdir=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.collector
@pytest.mark.parametrize(("where", "typo"), [
    ("a misspelt key", lambda c: c["processors"]["batch"].update(send_batch_sise=c["processors"]["batch"].pop(
        "send_batch_size"))),
    ("a misspelt component in a pipeline", lambda c: c["service"]["pipelines"]["traces"].update(
        exporters=["otlp_http/dynatrase"])),
])
def test_binary_refuses_a_config_with_a_typo(derived: dict[str, Any], resource: dict[str, Any], tmp_path: Path,
                                             where: str, typo: Any) -> None:
    typo(derived)
    result = validate(collector_binary_or_skip(), derived, env=local_env(resource, "t"), workdir=tmp_path)
    assert result.returncode != 0, f"validate accepted {where}"
    assert "send_batch_sise" in result.stderr or "otlp_http/dynatrase" in result.stderr, result.stderr
