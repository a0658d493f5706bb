"""The runner's decisions without a real stack: a fake stack records what is applied and restored, fake claims
fail on demand. Lint runs for real on a copy of the demo manifests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otelgate import paths
from otelgate.expect.errors import Evidence, ExpectationFailed
from otelgate.mutate import catalog
from otelgate.mutate.runner import KILLED, SURVIVED, Runner
from otelgate.stacks.base import StackSettings

MANIFESTS = paths.manifests_dir()
KONG_MUTANT = "sampling-zero:kong/kong.yaml:plugins[opentelemetry].config.sampling_rate"


class FakeSink:
    def __init__(self) -> None:
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1


class FakeStack:
    name = "fake"
    gateway_url = "http://127.0.0.1:1"
    kong_deployment_name = "kong-fake"

    def __init__(self, refuse: bool = False) -> None:
        self.settings = StackSettings()
        self.applied: list[dict[str, Any]] = []
        self.refuse = refuse
        self.sink = FakeSink()

    def reconfigure(self, **changes: Any) -> None:
        self.applied.append(changes)
        if self.refuse and any(v is not None for v in changes.values()):
            raise RuntimeError("the Kong simulator refused the new config: HTTP 400")
        self.settings = self.settings.with_changes(**changes)

    @property
    def mutated(self) -> bool:
        return any(getattr(self.settings, f) is not None for f in ("kong_yaml", "collector_yaml",
                                                                     "instrumentation_yaml"))


def claim(fails_when: Callable[[FakeStack], bool], cause: str = "NOT_SAMPLED") -> Callable[[Any], None]:
    def check(stack: Any) -> None:
        if fails_when(stack):
            raise ExpectationFailed(cause, "planted", evidence=Evidence(expected=1, seen=0))
    return check


@pytest.fixture(autouse=True)
def no_priming(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """claims.prime drives real traffic; here it records that the runner primed."""
    from otelgate import claims as claims_module

    primed: list[object] = []

    def prime(stack: object) -> dict[str, bool]:
        primed.append(stack)
        return {}

    monkeypatch.setattr(claims_module, "prime", prime)
    return primed


@pytest.fixture(scope="module")
def mutants() -> dict[str, catalog.Mutant]:
    return {m.id: m for m in catalog.generate(MANIFESTS)}


@pytest.fixture(scope="module")
def originals() -> dict[str, Any]:
    return {name: t.documents for name, t in catalog.targets(MANIFESTS).items()}


def judge(tmp_path: Path, stack: FakeStack, claims: list[tuple[str, Callable[[Any], None]]],
          mutant: catalog.Mutant, originals: dict[str, Any]) -> Any:
    runner = Runner(MANIFESTS, tmp_path, stack=stack, claims=claims)  # type: ignore[arg-type]
    runner._checked = True  # the unmutated check primes a real stack; its refusal is tested below
    return runner.judge(mutant, originals)


def test_a_claim_that_fails_only_with_the_mutant_kills_it_and_the_stack_is_restored(
        tmp_path: Path, mutants: dict[str, catalog.Mutant], originals: dict[str, Any], no_priming: list[object]
) -> None:
    stack = FakeStack()
    ran: list[str] = []
    claims = [("traces", lambda s: ran.append("traces")),
              ("logs", claim(lambda s: s.mutated, "UNCLEAN_TRACE_ID")),
              ("metrics", lambda s: ran.append("metrics"))]
    verdict = judge(tmp_path, stack, claims, mutants[KONG_MUTANT], originals)
    assert (verdict.verdict, verdict.killer, verdict.cause) == (KILLED, "logs", "UNCLEAN_TRACE_ID")
    assert "expected 1, seen 0" in verdict.evidence
    assert ran == ["traces"]  # the first failure decides; later claims do not run
    applied = stack.applied[0]["kong_yaml"]
    assert isinstance(applied, Path) and "sampling_rate: 0.0" in applied.read_text()
    assert stack.applied[-1] == {"kong_yaml": None} and not stack.mutated
    assert stack.sink.resets == 1  # nothing the mutant produced is judged with the next one
    assert no_priming == []         # a logs confirmation needs no priming: it is owed to the next claims


def test_the_priming_owed_after_a_restore_comes_before_the_next_claims_that_need_it(
        tmp_path: Path, mutants: dict[str, catalog.Mutant], originals: dict[str, Any], no_priming: list[object]
) -> None:
    stack = FakeStack()
    seen: list[int] = []  # how many primings had happened when the traces claim ran

    def traces(s: Any) -> None:
        seen.append(len(no_priming))
        claim(lambda st: st.settings.kong_yaml is not None and "sampling_rate: 0.0" in st.settings.kong_yaml
              .read_text())(s)

    metrics_fail = {"on": False}
    runner = Runner(MANIFESTS, tmp_path, stack=stack,  # type: ignore[arg-type]
                    claims=[("traces", traces), ("metrics", claim(lambda s: metrics_fail["on"] and s.mutated,
                                                                  "NOT_COUNTED"))])
    runner._checked = True
    assert runner.judge(mutants[KONG_MUTANT], originals).killer == "traces"
    assert no_priming == []  # restored, the traces confirmation ran without the owed priming
    other = mutants["propagation:kong/kong.yaml:plugins[opentelemetry].config.propagation.inject"]
    assert runner.judge(other, originals).verdict == SURVIVED
    assert seen[-1] == 1 and no_priming == [stack]  # primed once, before the next mutant's claims
    metrics_fail["on"] = True
    assert runner.judge(other, originals).killer == "metrics"
    assert no_priming == [stack, stack, stack]  # before its claims, and before the metrics confirmation


def test_a_claim_that_also_fails_without_the_mutant_is_inconclusive_not_a_kill(
        tmp_path: Path, mutants: dict[str, catalog.Mutant], originals: dict[str, Any]) -> None:
    verdict = judge(tmp_path, FakeStack(), [("metrics", claim(lambda s: True, "NOT_ENOUGH_DATA"))],
                    mutants[KONG_MUTANT], originals)
    assert verdict.verdict == SURVIVED and verdict.why.startswith("inconclusive")


def test_every_claim_passing_is_a_survivor(tmp_path: Path, mutants: dict[str, catalog.Mutant],
                                           originals: dict[str, Any]) -> None:
    verdict = judge(tmp_path, FakeStack(), [("traces", lambda s: None)], mutants[KONG_MUTANT], originals)
    assert verdict.verdict == SURVIVED and verdict.why == "lint and every claim pass with it applied"


def test_a_mutant_the_stack_refuses_is_killed_by_the_stack(tmp_path: Path, mutants: dict[str, catalog.Mutant],
                                                           originals: dict[str, Any]) -> None:
    stack = FakeStack(refuse=True)
    verdict = judge(tmp_path, stack, [("traces", lambda s: None)], mutants[KONG_MUTANT], originals)
    assert (verdict.verdict, verdict.killer, verdict.cause) == (KILLED, "stack", "NOT_APPLIED")
    assert "refused" in verdict.evidence and stack.applied[-1] == {"kong_yaml": None}


def test_a_red_gate_on_the_unmutated_manifests_stops_the_run(tmp_path: Path, mutants: dict[str, catalog.Mutant],
                                                             originals: dict[str, Any]) -> None:
    runner = Runner(MANIFESTS, tmp_path, stack=FakeStack(),  # type: ignore[arg-type]
                    claims=[("traces", claim(lambda s: True, "NO_TRACE"))])
    with pytest.raises(RuntimeError, match="red on the unmutated manifests"):
        runner.judge(mutants[KONG_MUTANT], originals)
