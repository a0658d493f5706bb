"""The mutation catalog of the demo manifests (otelgate.mutate.catalog), the reviewed equivalents file, the static
part of the runner (lint kills, what the local stack cannot see) and the report — no stack needed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from otelgate import paths
from otelgate.mutate import catalog, report
from otelgate.mutate.operators import COLLECTOR, INSTRUMENTATION, KONG, OPERATORS
from otelgate.mutate.runner import (
    EQUIVALENTS_FILE,
    KILLED,
    SURVIVED,
    Runner,
    Verdict,
    lint_verdict,
    load_equivalents,
    local_inputs,
    prepare_workspace,
)

MANIFESTS = paths.manifests_dir()


@pytest.fixture(scope="module")
def mutants() -> list[catalog.Mutant]:
    return catalog.generate(MANIFESTS)


def by_id(mutants: list[catalog.Mutant], mutant_id: str) -> catalog.Mutant:
    return next(m for m in mutants if m.id == mutant_id)


def test_catalog_covers_every_operator_and_file_with_stable_unique_ids(mutants: list[catalog.Mutant]) -> None:
    counts = Counter(m.operator for m in mutants)
    assert set(counts) == set(OPERATORS), f"operators without a mutant on the demo: {set(OPERATORS) - set(counts)}"
    assert {m.file for m in mutants} == {catalog.COLLECTOR_FILE, catalog.KONG_FILE, "otel/instrumentation.yaml"}
    assert len({m.id for m in mutants}) == len(mutants)
    assert [m.id for m in catalog.generate(MANIFESTS)] == [m.id for m in mutants]  # stable across runs
    # a floor, not an exact size: the catalog grows with the manifests (the report prints its size)
    assert len(mutants) >= 100, len(mutants)


def test_a_mutant_rewrites_only_its_document_and_keeps_the_others(mutants: list[catalog.Mutant], tmp_path: Path
                                                                   ) -> None:
    mutant = by_id(mutants, "remove-receiver:otel/collector.yaml:service.pipelines.logs.receivers.tcp_log")
    copy = catalog.copy_manifests(MANIFESTS, tmp_path / "m")
    mutant.write_into(copy)
    import yaml

    before = list(yaml.safe_load_all((MANIFESTS / mutant.file).read_text()))
    after = list(yaml.safe_load_all((copy / mutant.file).read_text()))
    assert len(before) == len(after)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == 1 and after[changed[0]]["kind"] == "OpenTelemetryCollector"
    assert after[changed[0]]["spec"]["config"]["service"]["pipelines"]["logs"]["receivers"] == ["otlp"]


def test_only_and_sample(mutants: list[catalog.Mutant]) -> None:
    assert {m.operator for m in catalog.generate(MANIFESTS, ["sampler"])} == {"sampler"}
    with pytest.raises(ValueError, match="unknown mutation operator"):
        catalog.generate(MANIFESTS, ["no-such-operator"])
    picked = catalog.sample(mutants, 30)
    assert len(picked) == 30 and picked == catalog.sample(mutants, 30)
    assert {m.target for m in picked} == {COLLECTOR, KONG, INSTRUMENTATION}
    assert len({m.operator for m in picked}) >= 20


def test_the_equivalents_file_names_existing_mutants_each_with_a_reason(mutants: list[catalog.Mutant]) -> None:
    equivalents = load_equivalents(MANIFESTS / EQUIVALENTS_FILE)
    assert equivalents
    assert set(equivalents) <= {m.id for m in mutants}, set(equivalents) - {m.id for m in mutants}
    assert all(len(reason) > 20 for reason in equivalents.values())


def test_an_equivalents_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = tmp_path / EQUIVALENTS_FILE
    path.write_text('[[equivalent]]\nmutant = "x"\n')
    with pytest.raises(ValueError, match="reason"):
        load_equivalents(path)


def test_lint_kills_a_mutant_statically_and_restores_the_workspace(mutants: list[catalog.Mutant],
                                                                   tmp_path: Path) -> None:
    workspace = prepare_workspace(MANIFESTS, tmp_path)
    original = (workspace / catalog.KONG_FILE).read_text()
    killed = lint_verdict(by_id(mutants, "plugin-endpoint:kong/kong.yaml:plugins[tcp-log].config.port"), workspace)
    assert killed is not None and killed.verdict == KILLED and killed.killer == "lint"
    assert "54526" in killed.evidence
    assert (workspace / catalog.KONG_FILE).read_text() == original


def test_what_the_local_stack_cannot_see(mutants: list[catalog.Mutant]) -> None:
    targets = catalog.targets(MANIFESTS)

    def visible(mutant_id: str) -> bool:
        mutant = by_id(mutants, mutant_id)
        return local_inputs(mutant.target, mutant.documents) != local_inputs(mutant.target,
                                                                             targets[mutant.target].documents)

    # the local stack runs only Python services and rewrites the cluster's endpoints
    assert not visible("drop-env:otel/instrumentation.yaml:spec.nodejs.env.OTEL_LOGS_EXPORTER")
    assert not visible("plugin-endpoint:kong/kong.yaml:plugins[opentelemetry].config.traces_endpoint.host")
    assert visible("env-protocol:otel/instrumentation.yaml:spec.python.env.OTEL_EXPORTER_OTLP_PROTOCOL")
    assert visible("sampling-zero:kong/kong.yaml:plugins[opentelemetry].config.sampling_rate")
    assert visible("auth-header:otel/collector.yaml:exporters.otlp_http/dynatrace.headers.Authorization.scheme")


def test_a_mutant_the_local_stack_cannot_see_survives_without_a_stack(mutants: list[catalog.Mutant],
                                                                      tmp_path: Path) -> None:
    runner = Runner(MANIFESTS, tmp_path)  # no stack: judging must not need one here
    originals = {name: t.documents for name, t in catalog.targets(MANIFESTS).items()}
    verdict = runner.judge(by_id(mutants, "drop-env:otel/instrumentation.yaml:spec.nodejs.env.OTEL_LOGS_EXPORTER"),
                           originals)
    assert verdict.verdict == SURVIVED and "does not see it" in verdict.why


def test_report_score_and_files(tmp_path: Path) -> None:
    verdicts = [Verdict("a:f:p", "a", "f", "d1", KILLED, "traces", "NOT_SAMPLED", "e", seconds=2.0),
                Verdict("b:f:p", "b", "f", "d2", SURVIVED, why="w", seconds=4.0),
                Verdict("c:f:p", "c", "f", "d3", "equivalent", why="r", seconds=0.5)]
    summary = report.summarize(verdicts, catalog_size=7, seconds=6.5)
    assert (summary.killed, summary.survived, summary.equivalent, summary.score) == (1, 1, 1, 0.5)
    assert summary.mean_seconds == pytest.approx(2.17, abs=0.01)
    dest = report.write(tmp_path / "r", verdicts, summary, {"machine": "test"})
    document = json.loads((dest / "report.json").read_text())
    assert document["summary"]["score"] == 0.5 and len(document["verdicts"]) == 3
    markdown = (dest / "report.md").read_text()
    assert "score 50%" in markdown and "`b:f:p` — d2: w" in markdown
    assert "<tr class='survived'>" in (dest / "report.html").read_text()
