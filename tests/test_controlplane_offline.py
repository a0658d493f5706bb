"""Offline parts of the control plane: the CRD-schema validation `otelgate lint` uses, the version pins that must
agree with the Operator the control plane runs, and the Operator flags derived from the chart values.
(The CRDs and versions.txt come from the Operator's Go module, cached; the first run copies them out of it.)"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelgate.controlplane import crds, crdschema, versions
from otelgate.controlplane.build import OPERATOR_VERSION_VARS, staging_modules
from otelgate.controlplane.cluster import operator_args

ROOT = Path(__file__).resolve().parents[1]


def _doc(relative: str, kind: str) -> dict[str, Any]:
    found = [d for d in yaml.safe_load_all((ROOT / relative).read_text())
             if isinstance(d, dict) and d.get("kind") == kind]
    assert len(found) == 1, f"{relative}: expected one {kind}"
    return found[0]


@pytest.fixture(scope="module")
def known() -> list[dict[str, Any]]:
    return crds.load_crds()


@pytest.fixture
def collector() -> dict[str, Any]:
    return copy.deepcopy(_doc("manifests/otel/collector.yaml", "OpenTelemetryCollector"))


@pytest.fixture
def instrumentation() -> dict[str, Any]:
    return copy.deepcopy(_doc("manifests/otel/instrumentation.yaml", "Instrumentation"))


def _findings(known: list[dict[str, Any]], body: dict[str, Any]) -> list[str]:
    schema = crds.schema_for(known, body["apiVersion"], body["kind"])
    assert schema, f"no CRD schema for {body['apiVersion']} {body['kind']}"
    return crdschema.validate(body, schema)


def test_the_manifests_custom_resources_match_the_operators_crd_schemas(
        known: list[dict[str, Any]], collector: dict[str, Any], instrumentation: dict[str, Any]) -> None:
    assert _findings(known, collector) == []
    assert _findings(known, instrumentation) == []


PLANTED = {
    "unknown field": ("collector", lambda d: d["spec"].update(replica=2), 'spec.replica: unknown field "spec.replica"'),
    "nested unknown field": ("instrumentation", lambda d: d["spec"]["python"].update(envs=[]),
                             'unknown field "spec.python.envs"'),
    "wrong type": ("instrumentation", lambda d: d["spec"]["sampler"].update(argument=0.5),
                   "spec.sampler.argument: expected string, got number"),
    "enum value": ("collector", lambda d: d["spec"].update(mode="deploymnet"), "spec.mode: Unsupported value"),
    "propagator enum": ("instrumentation", lambda d: d["spec"]["propagators"].append("w3c"),
                        "spec.propagators[2]: Unsupported value"),
    "wrong type in an env item": ("collector", lambda d: d["spec"]["env"].append({"name": "X", "value": 1}),
                                  "expected string, got integer"),
    "missing required field": ("collector", lambda d: d["spec"]["env"].append({"value": "x"}),
                               "name: Required value"),
}


@pytest.mark.parametrize("fault", sorted(PLANTED))
def test_schema_validation_names_each_planted_fault(fault: str, known: list[dict[str, Any]],
                                                    collector: dict[str, Any], instrumentation: dict[str, Any]) -> None:
    which, mutate, expected = PLANTED[fault]
    body = collector if which == "collector" else instrumentation
    mutate(body)
    findings = _findings(known, body)
    assert any(expected in f for f in findings), f"{fault}: {findings}"


def test_the_collector_config_stays_open_as_the_crd_says(known: list[dict[str, Any]],
                                                         collector: dict[str, Any]) -> None:
    """spec.config's component maps are x-kubernetes-preserve-unknown-fields: any component key is schema-valid
    (only the Operator's webhook judges components; tests/test_controlplane.py checks that)."""
    collector["spec"]["config"]["receivers"]["nosuchreceiver"] = {"whatever": [1, 2]}
    assert _findings(known, collector) == []


def test_lint_finding_names_a_version_the_crds_do_not_serve(collector: dict[str, Any]) -> None:
    collector["apiVersion"] = "opentelemetry.io/v2"
    [finding] = crds.lint_custom_resource(collector)
    assert "do not serve opentelemetry.io/v2 OpenTelemetryCollector" in finding
    assert "opentelemetry.io/v1beta1" in finding


def test_validator_types() -> None:
    schema = {"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": True}, "n": {"type": "integer", "minimum": 1},
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "maybe": {"type": "string", "nullable": True}}}
    assert crdschema.validate({"port": "http", "n": 2, "open": {"a": 1}, "labels": {"a": "b"}, "maybe": None},
                              schema) == []
    assert crdschema.validate({"port": 8080}, schema) == []
    problems = crdschema.validate({"port": 1.5, "n": 0, "labels": {"a": 1}, "x": 1, "maybe": True}, schema)
    assert len(problems) == 5, problems


# ------------------------------------------------------------------------------------------------ pins
def test_cluster_pins_name_the_operator_the_control_plane_verifies() -> None:
    values = yaml.safe_load((ROOT / "manifests" / "otel" / "operator-values.yaml").read_text())
    assert str(values["manager"]["image"]["tag"]) == versions.OPERATOR_VERSION
    from otelgate.cluster_topology import TOPOLOGY

    assert TOPOLOGY.charts["otel-operator"].version == versions.OPERATOR_CHART_VERSION


def test_local_python_pins_are_the_operators_python_image() -> None:
    """pyproject's opentelemetry pins = autoinstrumentation/python/requirements.txt of the pinned Operator."""
    wanted = dict(re.findall(r"^(opentelemetry-[\w-]+)==(\S+)", crds.operator_file(crds.PYTHON_REQUIREMENTS),
                             flags=re.MULTILINE))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = dict(re.findall(r"^(opentelemetry-[\w-]+)==(\S+)$", "\n".join(project), flags=re.MULTILINE))
    shared = {name: version for name, version in pinned.items() if name in wanted}
    assert {"opentelemetry-distro", "opentelemetry-exporter-otlp-proto-http",
            "opentelemetry-instrumentation-flask"} <= set(shared), pinned
    assert {n: wanted[n] for n in shared} == shared
    sdk = wanted["opentelemetry-exporter-otlp-proto-http"]
    for name in ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-proto"):
        assert pinned.get(name) == sdk, f"{name} {pinned.get(name)} != the image's SDK {sdk}"


def test_operator_build_links_every_default_image_version_of_versions_txt() -> None:
    text = crds.operator_file(crds.VERSIONS_FILE)
    keys = set(re.findall(r"^([a-z-]+)=", text, flags=re.MULTILINE))
    assert set(OPERATOR_VERSION_VARS.values()) <= keys
    assert f"operator={versions.OPERATOR_VERSION}" in text


def test_operator_flags_follow_the_chart_values() -> None:
    values = yaml.safe_load((ROOT / "manifests" / "otel" / "operator-values.yaml").read_text())
    args = operator_args(values)
    image = values["manager"]["collectorImage"]
    assert f"--collector-image={image['repository']}:{image['tag']}" in args
    assert ("--enable-go-instrumentation" in args) == bool(values["manager"]["autoInstrumentation"]["go"]["enabled"])


def test_staging_replaces_are_read_from_the_kubernetes_go_mod(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module k8s.io/kubernetes\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n"
                                     "\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n\tfoo => bar v1\n)\n")
    assert staging_modules(tmp_path) == ["k8s.io/api", "k8s.io/client-go"]


def test_otelgate_lint_names_a_crd_schema_fault(tmp_path: Path) -> None:
    import shutil

    from otelgate.lint import lint_manifests

    root = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", root)
    path = root / "otel" / "instrumentation.yaml"
    path.write_text(path.read_text().replace("  sampler:\n", "  sampler:\n    ratio: 0.5\n", 1))
    findings = [str(f) for f in lint_manifests(root)]
    assert any('unknown field "spec.sampler.ratio"' in f and "CRD schema" in f for f in findings), findings


def test_local_python_env_is_the_operators_rendering_up_to_the_listed_rewrites() -> None:
    """The local stack's env for the Python demo service = the checked-in rendering of the real Operator (guarded
    by tests/test_controlplane.py), except injection.LOCAL_REWRITES / LOCAL_ONLY."""
    from otelgate.controlplane import injection
    from otelgate.demoapp.launch import LOCAL_NODE, Instrumentation

    rendering = injection.load_rendering()
    service = rendering["source"]["deployment"]
    local = Instrumentation.from_manifest("http://127.0.0.1:4318").env(service, base_env={})
    fields = {"metadata.name": f"{service}-local", "spec.nodeName": LOCAL_NODE, "status.podIP": "127.0.0.1",
              "status.hostIP": "127.0.0.1"}
    assert injection.unexplained_differences(rendering["env"], local, fields) == []
    cluster = injection.resolve(rendering["env"], fields)
    assert local["OTEL_EXPORTER_OTLP_ENDPOINT"] != cluster["OTEL_EXPORTER_OTLP_ENDPOINT"]  # the one endpoint rewrite


def test_the_env_comparison_sees_a_planted_difference() -> None:
    from otelgate.controlplane import injection

    rendered = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
                {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "k8s.pod.name=$(POD)"}]
    local = {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=x"}
    problems = injection.unexplained_differences(rendered, local, {"metadata.name": "x"})
    assert len(problems) == 1 and "OTEL_TRACES_SAMPLER" in problems[0], problems
    local["OTEL_RESOURCE_ATTRIBUTES"] = "k8s.pod.name=y"
    assert len(injection.unexplained_differences(rendered, local, {"metadata.name": "x"})) == 2
