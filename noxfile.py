"""otelgate's entry points. `nox -s tests` is what CI runs (see README.md)."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
ARTIFACTS = "artifacts"


def _install(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", spec)


def _ensure_collector(session: nox.Session) -> None:
    """Build otelgate's collector distribution into the cache if the manifest changed (no-op when cached)."""
    session.run("python", "-m", "otelgate", "collector", "--ensure")


def _ensure_controlplane(session: nox.Session) -> None:
    """etcd, kube-apiserver and the OpenTelemetry Operator, built from the Go module proxy once (cached by version),
    outside any test timeout."""
    session.run("python", "-m", "otelgate.controlplane", "build")


def _junit(name: str) -> str:
    return f"--junitxml={ARTIFACTS}/junit-{name}.xml"


def _ensure_chromium(session: nox.Session) -> None:
    """Debian's headless Chromium, which opens the HTML trace view in tests/test_reports_e2e.py."""
    if shutil.which("chromium"):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run(*sudo, "apt-get", "update", "-q", external=True, env=env)
    session.run(*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", external=True, env=env)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit tests, the suites and negative controls on the local stack, static checks of the cluster manifests."""
    _install(session, "test", "kube", "load")
    _ensure_collector(session)
    # decK for `deck file validate` of kong.yaml, built from the Go module proxy once (cached), outside any test timeout
    session.run("python", "-m", "otelgate", "lint", "--ensure-deck")
    _ensure_controlplane(session)
    _ensure_chromium(session)
    # In CI nothing may be skipped: a missing collector, decK or any stack part is a failure there.
    session.env["OTELGATE_REQUIRE_COLLECTOR"] = "1"
    session.env["OTELGATE_REQUIRE_DECK"] = "1"
    session.env["OTELGATE_OUTAGE_SECONDS"] = "7"  # the resilience suite's outage: short in CI (default 20 s)
    session.env["OTELGATE_REQUIRE_CONTROLPLANE"] = "1"
    # File order by default (reproducible CI); OTELGATE_RANDOM_ORDER=1 shuffles with pytest-randomly (seed printed).
    order = [] if os.environ.get("OTELGATE_RANDOM_ORDER") else ["-p", "no:randomly"]
    session.run("pytest", "tests", "suites", "--stack=local", *order, *_workers(), _junit("tests"), *session.posargs)


def _workers() -> list[str]:
    """pytest-xdist workers, one test file per worker at a time (``--dist loadfile``: a file's module fixtures and
    stack stay in one process). Most of the suite waits on stacks rather than computing, so two workers halve the
    wall time on 2 cores (README, "Measured"); OTELGATE_TEST_WORKERS=0 runs everything in one process."""
    workers = os.environ.get("OTELGATE_TEST_WORKERS", "2")
    return [] if workers == "0" else ["-n", workers, "--dist", "loadfile"]


@nox.session(python=PYTHON)
def controlplane(session: nox.Session) -> None:
    """A real API server and the OpenTelemetry Operator judge the manifests (docs/controlplane.md)."""
    _install(session, "test", "kube")
    _ensure_controlplane(session)
    session.env["OTELGATE_REQUIRE_CONTROLPLANE"] = "1"
    order = [] if os.environ.get("OTELGATE_RANDOM_ORDER") else ["-p", "no:randomly"]
    session.run("pytest", "tests/test_controlplane.py", "tests/test_controlplane_faults.py",
                "tests/test_controlplane_mutants.py", "tests/test_controlplane_offline.py", *order,
                _junit("controlplane"), *session.posargs)


@nox.session(python=PYTHON)
def collector(session: nox.Session) -> None:
    """Build otelgate's collector distribution (cached by the manifest's hash); print build time and size."""
    _install(session)
    session.run("python", "-m", "otelgate", "collector", "--build", *session.posargs)


@nox.session(python=PYTHON)
def local(session: nox.Session) -> None:
    """The suites on the local stack (the main job on a machine without Docker)."""
    _install(session, "test")
    _ensure_collector(session)
    session.run("pytest", "suites", "--stack=local", _junit("local"), *session.posargs)


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """The suites on a kind cluster (needs Docker, kind, kubectl, helm)."""
    _install(session, "test", "kube")
    session.run("python", "-m", "otelgate", "up", "--stack=kind", "--check-prerequisites")
    session.run("pytest", "suites", "--stack=kind", _junit("e2e"), *session.posargs)


@nox.session(python=PYTHON)
def docker(session: nox.Session) -> None:
    """The suites on the docker stack: real Kong and the contrib collector in containers (needs Docker)."""
    _install(session, "test", "docker")
    session.run("python", "-m", "otelgate", "up", "--stack=docker", "--check-prerequisites")
    session.run("pytest", "suites", "--stack=docker", _junit("docker"), *session.posargs)


@nox.session(python=PYTHON)
def load(session: nox.Session) -> None:
    """The sampling-rate sweep under locust load, with its report (pass options after `--`)."""
    _install(session, "load")
    if "--stack=kind" not in session.posargs and "kind" not in session.posargs:
        _ensure_collector(session)
    session.run("python", "-m", "loadtests.sweep", *session.posargs)


@nox.session(python=PYTHON)
def mutate(session: nox.Session) -> None:
    """Mutation testing of the manifests: every catalogued mutant judged by lint and the claims on the local stack
    (docs/mutation.md); report in reports/mutation-<ts>/. Options after `--` go to `otelgate mutate`."""
    _install(session, "test")
    _ensure_collector(session)
    session.run("python", "-m", "otelgate", "mutate", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (every Python file of the repository) and mypy (otelgate and loadtests, strictness in pyproject.toml)."""
    _install(session, "lint", "test")
    session.run("ruff", "check", ".")
    session.run("mypy")


if os.environ.get("CI"):
    nox.options.error_on_missing_interpreters = True
