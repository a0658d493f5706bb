"""Run the gate on each mutant: ``otelgate lint`` first (a mutant it rejects is killed statically), then the claims
on a running local stack with the mutant applied through ``Stack.reconfigure`` (Kong reload, collector restart or
the demo services restarted), the stack restored afterwards.

Verdicts: ``killed`` (by ``lint``, ``stack`` — the stack could not apply the mutant, as a deployment would fail to
roll out — or a claim, with its cause and evidence), ``survived`` (with why) or ``equivalent`` (listed, with the
reason, in the reviewed equivalents file). Claims run fastest-first and the first failure decides.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from otelgate.mutate.catalog import Mutant, copy_manifests
from otelgate.mutate.operators import COLLECTOR, INSTRUMENTATION, KONG
from otelgate.stacks.base import Stack

KILLED, SURVIVED, EQUIVALENT = "killed", "survived", "equivalent"
EQUIVALENTS_FILE = "mutation-equivalents.toml"
# the StackSettings field that carries a whole mutated file of each target
SETTING_OF = {KONG: "kong_yaml", COLLECTOR: "collector_yaml", INSTRUMENTATION: "instrumentation_yaml"}


@dataclass(frozen=True)
class Verdict:
    mutant: str               # the mutant's id
    operator: str
    file: str
    description: str
    verdict: str              # killed | survived | equivalent
    killer: str | None = None  # lint | stack | traces | logs | sampling | metrics
    cause: str | None = None
    evidence: str = ""
    why: str = ""             # for survivors and equivalents
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # apply, settle, claims, restore, confirm: seconds each

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_equivalents(path: Path) -> dict[str, str]:
    """``{mutant id: reason}`` from the reviewed equivalents file (missing file: none). Each entry needs a reason."""
    if not path.is_file():
        return {}
    data = tomllib.loads(path.read_text())
    out: dict[str, str] = {}
    for entry in data.get("equivalent", []):
        mutant, reason = str(entry.get("mutant") or ""), str(entry.get("reason") or "").strip()
        if not mutant or not reason:
            raise ValueError(f"{path}: every [[equivalent]] entry needs 'mutant' and a non-empty 'reason': {entry}")
        out[mutant] = reason
    return out


# --------------------------------------------------------------------------------------------------- lint

def lint_verdict(mutant: Mutant, workspace: Path) -> Verdict | None:
    """Killed when ``otelgate lint`` finds anything in the folder with the mutant written in; else None."""
    from otelgate.lint import lint_manifests

    path = mutant.write_into(workspace)
    try:
        findings = lint_manifests(workspace)
    finally:
        path.write_text(_original_text(workspace, mutant))
    if not findings:
        return None
    first = findings[0]
    return Verdict(mutant.id, mutant.operator, mutant.file, mutant.description, KILLED, "lint",
                   "LINT", "; ".join(str(f) for f in findings[:3]) + (f" (+{len(findings) - 3})" if len(findings) > 3
                                                                      else ""), why=str(first))


_ORIGINALS: dict[tuple[str, str], str] = {}


def _original_text(workspace: Path, mutant: Mutant) -> str:
    return _ORIGINALS[(str(workspace), mutant.file)]


def prepare_workspace(manifests: Path, workdir: Path) -> Path:
    """A private copy of the manifests folder for lint (the original files remembered to restore after each)."""
    workspace = copy_manifests(manifests, workdir / "manifests")
    for path in workspace.rglob("*.y*ml"):
        _ORIGINALS[(str(workspace), path.relative_to(workspace).as_posix())] = path.read_text()
    return workspace


# ------------------------------------------------------------------------------------ visible on the stack?

def local_inputs(target: str, documents: Sequence[Any]) -> Any:
    """What the local stack derives from one target's documents (ports and hosts fixed), to tell whether a mutant
    changes anything the local stack runs. A document the derivation refuses gives its error (so it differs)."""
    try:
        if target == KONG:
            from otelgate import kongconfig

            return kongconfig.derive_kong_config(
                documents[0], upstreams={name: "http://localhost:1" for name in _gateway_services()},
                otlp_traces_endpoint="http://127.0.0.1:2/v1/traces", tcp_log_host="127.0.0.1", tcp_log_port=3)
        if target == COLLECTOR:
            from otelgate.collector.config import CollectorPorts, derive_local_config, local_env

            resource = next(d for d in documents if isinstance(d, dict) and d.get("kind") == "OpenTelemetryCollector")
            config = derive_local_config(resource["spec"]["config"], ports=CollectorPorts(1, 2, 3, 4, 5, 6),
                                         sink_endpoint="http://127.0.0.1:7/api/v2/otlp",
                                         kong_status_target="127.0.0.1:8")
            return config, local_env(resource, "token")
        if target == INSTRUMENTATION:
            import yaml

            from otelgate.demoapp.launch import Instrumentation

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "instrumentation.yaml"
                doc = next(d for d in documents if isinstance(d, dict) and d.get("kind") == "Instrumentation")
                path.write_text(yaml.safe_dump(doc))
                inst = Instrumentation.from_manifest("http://127.0.0.1:2", path)
                return {name: inst.env(name, base_env={}) for name in _demo_services()}
    except Exception as exc:  # the stack would refuse it too: a difference
        return f"refused: {type(exc).__name__}: {exc}"
    raise ValueError(f"unknown target {target!r}")


def _gateway_services() -> tuple[str, ...]:
    from otelgate import topology

    return tuple(topology.current().gateway_services)


def _demo_services() -> tuple[str, ...]:
    from otelgate import topology

    return tuple(topology.current().demo_services)


# ----------------------------------------------------------------------------------------------- the claims

def _traces(stack: Stack) -> None:
    from otelgate import claims

    claims.check_trace_spans_services(stack)


def _logs(stack: Stack) -> None:
    from otelgate import claims

    claims.check_access_logs(stack, requests=10)  # as suites/test_logs.py


def _sampling(stack: Stack) -> None:
    from otelgate import sampling_claim

    sampling_claim.check_crafted_sampling(stack, 0.5, count=20)


def _metrics(stack: Stack) -> None:
    from otelgate import claims

    claims.check_metrics_delta_and_counts(stack, requests=20)  # as suites/test_metrics.py


# fastest first (a trace or a log is decided in about a second, metrics wait for a scrape), except that metrics run
# before sampling: both drive the same route (otelgate.toml [claims]), and requests sent just before the metrics
# claim's baseline scrape would be counted in its window (a false COUNT_MISMATCH)
CLAIMS: tuple[tuple[str, Callable[[Stack], None]], ...] = (
    ("traces", _traces), ("logs", _logs), ("metrics", _metrics), ("sampling", _sampling))
# claims that want a primed stack before they run (the metrics claim counts from a scrape the collector has already
# taken as cumulative_to_delta's baseline); traces and logs wait for their own request's data
PRIMED_CLAIMS = frozenset({"metrics", "sampling"})


def run_claims(stack: Stack, claims: Sequence[tuple[str, Callable[[Stack], None]]] = CLAIMS
               ) -> tuple[str, str, str] | None:
    """(claim, cause, evidence) of the first claim that fails, or None when all hold."""
    from otelgate.expect.errors import ExpectationFailed

    for name, check in claims:
        try:
            check(stack)
        except ExpectationFailed as exc:
            summary = exc.evidence.summary() if not exc.evidence.is_empty() else ""
            return name, exc.cause, (f"{exc.message}; {summary}" if summary else exc.message)[:600]
        except AssertionError as exc:  # e.g. the gateway answered an error: the suite would be red as well
            return name, type(exc).__name__, str(exc).splitlines()[0][:600] if str(exc) else ""
    return None


def _settle(stack: Stack) -> None:
    """Prime every route as the suites' warm-up does: after a restore (the sink emptied; deferred until claims need
    it, see ``Runner._restore``), and on a restarted collector, whose first scrape is only cumulative_to_delta's
    baseline (without priming, the metrics claim saw one window, NOT_ENOUGH_DATA, even on the unmutated manifests).
    Priming never fails: a signal the mutant breaks ends its wait on a refusal or at the claims' timeout, and the
    claims that follow give the verdict."""
    from otelgate import claims

    claims.prime(stack)


# ------------------------------------------------------------------------------------------------- the run

@dataclass
class Runner:
    """Judges mutants one after another on one stack (``stack_factory`` starts a fresh one when needed)."""

    manifests: Path
    workdir: Path
    stack_factory: Callable[[], Stack] | None = None
    equivalents: Mapping[str, str] = field(default_factory=dict)
    claims: Sequence[tuple[str, Callable[[Stack], None]]] = CLAIMS
    stack: Stack | None = None
    _workspace: Path | None = None
    _baseline: dict[str, Any] = field(default_factory=dict)
    _checked: bool = False
    _phases: dict[str, float] = field(default_factory=dict)
    _unprimed: bool = False   # restored (sink emptied) but not primed yet: done before the claims next need it

    def workspace(self) -> Path:
        if self._workspace is None:
            self._workspace = prepare_workspace(self.manifests, self.workdir)
        return self._workspace

    def baseline(self, mutant: Mutant, originals: Mapping[str, Sequence[Any]]) -> Any:
        if mutant.target not in self._baseline:
            self._baseline[mutant.target] = local_inputs(mutant.target, originals[mutant.target])
        return self._baseline[mutant.target]

    def judge(self, mutant: Mutant, originals: Mapping[str, Sequence[Any]]) -> Verdict:
        started = time.monotonic()
        self._phases = {}
        verdict = self._judge(mutant, originals)
        return Verdict(**{**verdict.as_dict(), "seconds": round(time.monotonic() - started, 2),
                          "phases": dict(self._phases)})

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self._phases[name] = round(self._phases.get(name, 0.0) + time.monotonic() - started, 2)

    def _judge(self, mutant: Mutant, originals: Mapping[str, Sequence[Any]]) -> Verdict:
        base: dict[str, Any] = dict(mutant=mutant.id, operator=mutant.operator, file=mutant.file,
                                    description=mutant.description)
        killed = lint_verdict(mutant, self.workspace())
        if killed is not None:
            return killed
        if mutant.id in self.equivalents:
            return Verdict(**base, verdict=EQUIVALENT, why=self.equivalents[mutant.id])
        if local_inputs(mutant.target, mutant.documents) == self.baseline(mutant, originals):
            return Verdict(**base, verdict=SURVIVED,
                           why="lint accepts it and the local stack does not see it (its derivation rewrites or does "
                               "not use this value): no check can judge it")
        stack = self._stack()
        setting = SETTING_OF[mutant.target]
        if setting != "collector_yaml":  # a collector mutant's own restart is followed by a priming anyway
            with self._phase("settle"):
                self._ensure_primed()
        path = self.workdir / "mutants" / mutant.id.replace("/", "_").replace(":", "__") / Path(mutant.file).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(mutant.text())
        try:
            try:
                with self._phase("apply"):
                    stack.reconfigure(**{setting: path})
            except Exception as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                first_line = first_line.replace(f"{self.workdir.resolve()}/", "<workdir>/")  # reports leave the machine
                return Verdict(**base, verdict=KILLED, killer="stack", cause="NOT_APPLIED",
                               evidence=f"{type(exc).__name__}: {first_line}"[:600])
            if setting == "collector_yaml":
                with self._phase("settle"):
                    _settle(stack)
                    self._unprimed = False
            with self._phase("claims"):
                failed = run_claims(stack, self.claims)
        finally:
            with self._phase("restore"):
                self._restore(setting)
        if failed is None:
            return Verdict(**base, verdict=SURVIVED, why="lint and every claim pass with it applied")
        claim, cause, evidence = failed
        with self._phase("confirm"):
            unmutated = self._confirm(claim)
        if unmutated is not None:  # the claim fails without the mutant too: the failure is not the mutant's doing
            return Verdict(**base, verdict=SURVIVED, killer=None, cause=cause, evidence=evidence,
                           why=f"inconclusive: {claim} failed with it ([{cause}]) but also on the restored, unmutated "
                               f"stack ([{unmutated}]); not counted as killed")
        return Verdict(**base, verdict=KILLED, killer=claim, cause=cause, evidence=evidence)

    def _confirm(self, claim: str) -> str | None:
        """Run the killing claim again on the restored stack: None when it passes there (the kill stands), else the
        cause it failed with."""
        if self.stack is None:  # could not be restored: a fresh stack is checked before the next mutant
            return None
        if claim in PRIMED_CLAIMS:
            self._ensure_primed()
        failed = run_claims(self.stack, [c for c in self.claims if c[0] == claim])
        return None if failed is None else failed[1]

    def _stack(self) -> Stack:
        if self.stack is None:
            if self.stack_factory is None:
                raise RuntimeError("a mutant needs the running stack, and this runner was given no stack_factory")
            self.stack = self.stack_factory()
            self._checked = False
        if not self._checked:
            self._check_unmutated(self.stack)
        return self.stack

    def _check_unmutated(self, stack: Stack) -> None:
        """Prime every route as the suites do (Kong's series exist, so a later delta counts from a known point),
        then require every claim to pass on the unmutated manifests: a kill must be the mutant's doing."""
        from otelgate import claims

        claims.prime(stack)
        failed = run_claims(stack, self.claims)
        if failed is not None:
            claim, cause, evidence = failed
            raise RuntimeError(f"the gate is red on the unmutated manifests ({claim}: [{cause}] {evidence}); "
                               "mutants cannot be judged until it is green")
        self._checked = True
        self._unprimed = False

    def _ensure_primed(self) -> None:
        if self._unprimed and self.stack is not None:
            _settle(self.stack)
            self._unprimed = False

    def _restore(self, setting: str) -> None:
        """Back to the manifests' own file; a stack that cannot go back is replaced by a fresh one."""
        assert self.stack is not None
        try:
            self.stack.reconfigure(**{setting: None})
            # nothing the mutant produced may be judged with the next one (the metrics claim checks every Kong point
            # in the sink for the deployment attribute): empty the sink. The priming the suites' warm-up does is
            # owed until claims need it (a metrics or sampling confirmation, the next Kong or Instrumentation
            # mutant's claims); a next collector mutant restarts the collector and primes after that restart anyway,
            # so a priming here (~12 s after a collector restart: two 5 s scrapes) would be spent twice.
            self.stack.sink.reset()
            self._unprimed = True
        except Exception:
            with contextlib.suppress(Exception):
                self.stack.close()
            self.stack = None  # the next mutant that needs one starts (and checks) a fresh stack

    def close(self) -> None:
        if self.stack is not None and self.stack_factory is not None:  # a stack given by the caller stays theirs
            self.stack.close()
            self.stack = None


def run(runner: Runner, mutants: Iterable[Mutant], originals: Mapping[str, Sequence[Any]],
        progress: Callable[[int, int, Verdict, float], None] | None = None) -> list[Verdict]:
    """Judge every mutant in order; ``progress(done, total, verdict, elapsed)`` after each."""
    todo = list(mutants)
    verdicts: list[Verdict] = []
    started = time.monotonic()
    for mutant in todo:
        verdicts.append(runner.judge(mutant, originals))
        if progress is not None:
            progress(len(verdicts), len(todo), verdicts[-1], time.monotonic() - started)
    return verdicts
