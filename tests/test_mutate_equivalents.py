"""The reviewed equivalents file (manifests/mutation-equivalents.toml) against the manifests it argues about.

Each entry must still name a mutant of the catalog that lint does not already kill, and the facts its reason rests on
must still hold where they are cheap to check (no Upstream entities or consumers in kong.yaml, the value a drop-env
entry removes is the default, metrics/local exports nowhere near Dynatrace, ...). Every entry belongs to one family of
this file; a new kind of entry needs its facts checked here too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelgate.lint.exporting import LANGUAGES, injecting_apps
from otelgate.lint.model import load
from otelgate.mutate import catalog
from otelgate.mutate.runner import EQUIVALENTS_FILE, lint_verdict, load_equivalents, prepare_workspace

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
EQUIVALENTS = load_equivalents(MANIFESTS / EQUIVALENTS_FILE)


def _docs(relative: str) -> list[Any]:
    return [d for d in yaml.safe_load_all((MANIFESTS / relative).read_text()) if d is not None]


def _collector_config() -> dict[str, Any]:
    resource = next(d for d in _docs("otel/collector.yaml") if d.get("kind") == "OpenTelemetryCollector")
    config: dict[str, Any] = resource["spec"]["config"]
    return config


def _kong() -> dict[str, Any]:
    kong: dict[str, Any] = _docs("kong/kong.yaml")[0]
    return kong


def _instrumentation() -> dict[str, Any]:
    return next(d for d in _docs("otel/instrumentation.yaml") if d.get("kind") == "Instrumentation")


# --- facts, one per family of entries ---------------------------------------------------------------------------------

def metrics_local_reaches_no_backend(_mutant: str) -> None:
    exporters = _collector_config()["service"]["pipelines"]["metrics/local"]["exporters"]
    assert {e.split("/")[0] for e in exporters} <= {"prometheus", "debug"}, exporters


def debug_writes_only_the_log(mutant: str) -> None:
    assert "exporters.debug" in mutant or "debug" in mutant
    assert set(_collector_config()["exporters"]["debug"]) <= {"verbosity"}


def batch_changes_timing_only(_mutant: str) -> None:
    assert set(_collector_config()["processors"]["batch"]) <= {"timeout", "send_batch_size"}


def memory_limiter_is_a_safety_net(_mutant: str) -> None:
    assert "limit_percentage" in _collector_config()["processors"]["memory_limiter"]


def attributes_kong_inserts_constants(_mutant: str) -> None:
    actions = _collector_config()["processors"]["attributes/kong"]["actions"]
    assert actions and all(a["action"] == "insert" and "value" in a and "from_attribute" not in a for a in actions)


def no_upstream_entities(_mutant: str) -> None:
    assert not _kong().get("upstreams"), "kong.yaml now defines Upstream entities: upstream_health_metrics matters"


def no_consumers(_mutant: str) -> None:
    kong = _kong()
    assert not kong.get("consumers"), "kong.yaml now defines consumers: per_consumer fills the consumer label"
    authenticating = [p["name"] for p in kong.get("plugins") or []
                      if p["name"].endswith(("-auth", "jwt", "oauth2", "openid-connect"))]
    assert not authenticating, f"a plugin may identify consumers: {authenticating}"


def prometheus_exporter_only_local(_mutant: str) -> None:
    pipelines = _collector_config()["service"]["pipelines"]
    assert [name for name, p in pipelines.items() if "prometheus" in p["exporters"]] == ["metrics/local"]


def dropped_value_is_the_default(mutant: str) -> None:
    match = re.fullmatch(r"drop-env:[^:]+:spec\.(\w+)\.env\.(\w+)", mutant)
    assert match, mutant
    language, name = match.groups()
    spec = _instrumentation()["spec"]
    value = next(e["value"] for e in spec[language]["env"] if e["name"] == name)
    assert not any(e.get("name") == name for e in spec.get("env") or []), "spec.env would supply another value"
    defaults = LANGUAGES[language]
    expected = {"OTEL_EXPORTER_OTLP_PROTOCOL": defaults.protocol, "OTEL_LOGS_EXPORTER": defaults.logs_exporter,
                "OTEL_EXPORTER_OTLP_ENDPOINT": spec["exporter"]["endpoint"]}[name]
    assert value == expected, f"{language} {name}: the manifest's {value!r} is not the default {expected!r}"
    if language == "nodejs":  # the default cited is the pinned image's SDK (auto-instrumentations-node 0.56.0)
        assert spec["nodejs"]["image"].endswith(":0.56.0"), spec["nodejs"]["image"]
    else:  # the Operator's default image, whose version the reason cites
        assert "image" not in spec[language], f"{language} pins an image; its defaults may differ"
    m = load(MANIFESTS)
    instrumentation = m.objects("Instrumentation")[0]
    assert injecting_apps(m, instrumentation.namespace, instrumentation.name).get(language), (
        f"no app injects {language} any more; the entry argues about nothing")


def health_check_port_used_by_nothing_else(_mutant: str) -> None:
    endpoint = _collector_config()["extensions"]["health_check"]["endpoint"]
    port = endpoint.rpartition(":")[2]
    users = [p.relative_to(MANIFESTS).as_posix() for p in MANIFESTS.rglob("*.y*ml") if port in p.read_text()]
    assert users == ["otel/collector.yaml"], f"port {port} is referenced elsewhere: {users}"


FAMILIES: list[tuple[str, Callable[[str], None]]] = [
    (r".*pipelines\.metrics/local\..*", metrics_local_reaches_no_backend),
    (r"remove-exporter:.*\.exporters\.debug", debug_writes_only_the_log),
    (r"(batch-timeout:.*|remove-processor:.*\.batch|swap-processors:.*<>batch)", batch_changes_timing_only),
    (r"(remove-processor:.*\.memory_limiter|swap-processors:.*memory_limiter<>.*)", memory_limiter_is_a_safety_net),
    (r"swap-processors:.*attributes/kong<>cumulative_to_delta", attributes_kong_inserts_constants),
    (r".*upstream_health_metrics", no_upstream_entities),
    (r".*per_consumer", no_consumers),
    (r"change-listen-port:.*exporters\.prometheus\.endpoint", prometheus_exporter_only_local),
    (r"drop-env:.*", dropped_value_is_the_default),
    (r"change-listen-port:.*extensions\.health_check\.endpoint", health_check_port_used_by_nothing_else),
]


def families_of(mutant: str) -> list[Callable[[str], None]]:
    return [check for pattern, check in FAMILIES if re.fullmatch(pattern, mutant)]


@pytest.fixture(scope="module")
def mutants() -> dict[str, catalog.Mutant]:
    return {m.id: m for m in catalog.generate(MANIFESTS)}


def test_every_entry_names_a_mutant_of_the_catalog(mutants: dict[str, catalog.Mutant]) -> None:
    assert EQUIVALENTS
    assert not set(EQUIVALENTS) - set(mutants), sorted(set(EQUIVALENTS) - set(mutants))


def test_every_entry_belongs_to_a_family_whose_facts_are_checked() -> None:
    assert [m for m in EQUIVALENTS if not families_of(m)] == []


@pytest.mark.parametrize("mutant", sorted(EQUIVALENTS))
def test_the_facts_of_the_reason_still_hold(mutant: str) -> None:
    for check in families_of(mutant):
        check(mutant)


def test_lint_kills_no_listed_mutant(mutants: dict[str, catalog.Mutant], tmp_path: Path) -> None:
    # lint runs before the equivalents file is read: a listed mutant that lint kills is a wrong or stale entry
    workspace = prepare_workspace(MANIFESTS, tmp_path)
    killed = {m: str(v.why) for m in sorted(EQUIVALENTS) if (v := lint_verdict(mutants[m], workspace)) is not None}
    assert killed == {}


def test_every_test_a_reason_names_exists() -> None:
    # a reason may point at the live test that shows it (the control plane's Operator); that test must exist
    named = {ref for reason in EQUIVALENTS.values() for ref in re.findall(r"(tests/\w+\.py)::(\w+)", reason)}
    assert named, "no reason names a test any more: drop this check or the references were lost"
    missing = [f"{path}::{name}" for path, name in sorted(named)
               if not (REPO / path).is_file() or not re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M)]
    assert missing == []


def test_a_fact_check_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    # proves the facts are read from the manifests: kong.yaml with a consumer fails the per_consumer entry's check
    kong = {**_kong(), "consumers": [{"username": "alice"}]}
    monkeypatch.setattr(f"{__name__}._kong", lambda: kong)
    with pytest.raises(AssertionError, match="consumers"):
        no_consumers("flip-boolean-kong:kong/kong.yaml:plugins[prometheus].config.per_consumer")
