"""pytest plugin: a failing stack test leaves ``artifacts/<test id>/`` and says where in its failure text.

- Records the journal of the run (:mod:`otelgate.reports.journal`): one segment per fixture set-up and test call.
- On a test that used the ``stack``/``warm_stack`` fixture and failed (in set-up or call), writes the artifacts
  (:func:`otelgate.reports.artifacts.write_artifacts`) while the stack still runs, and appends
  ``artifacts: <path>`` to the failure: in the terminal and in JUnit XML (both the ``message`` attribute and the
  failure text).
- ``--otelgate-artifacts=all`` writes them for passing tests too (a passing run's dump, e.g. to replay it);
  ``none`` turns them off. The folder root is ``$OTELGATE_ARTIFACTS`` or ``<rootdir>/artifacts``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from otelgate import traffic
from otelgate.reports.artifacts import TestResult, write_artifacts
from otelgate.reports.html import Window
from otelgate.reports.journal import Recorder, _Segments

STACK_FIXTURES = ("warm_stack", "stack")
ARTIFACT_MODES = ("failed", "all", "none")
_RECORDER = pytest.StashKey[Recorder]()
_STARTED = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("otelgate")
    group.addoption("--otelgate-artifacts", choices=ARTIFACT_MODES, default="failed",
                    help="write artifacts/<test id>/ for failed stack tests (default), all stack tests, or none")


def pytest_configure(config: pytest.Config) -> None:
    if traffic.journal is None:  # `otelgate replay` installs its player before pytest starts
        recorder = Recorder(time.time_ns)
        traffic.journal = recorder
        config.stash[_RECORDER] = recorder


def pytest_unconfigure(config: pytest.Config) -> None:
    recorder = config.stash.get(_RECORDER, None)
    if recorder is not None and traffic.journal is recorder:
        traffic.journal = None


def artifacts_root(config: pytest.Config) -> Path:
    """Same rule as the ``artifacts_dir`` fixture."""
    return Path(os.environ.get("OTELGATE_ARTIFACTS") or config.rootpath / "artifacts")


def fixture_segment_key(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> str:
    """``fixture:<name>@<node id of the fixture's scope>``; e.g. ``fixture:warm_stack@`` for the session."""
    node = getattr(request, "node", None)
    key = f"fixture:{fixturedef.argname}@{getattr(node, 'nodeid', '')}"
    param_index = getattr(request, "param_index", 0)
    return f"{key}[{param_index}]" if getattr(request, "param", None) is not None else key


def _segments() -> _Segments | None:
    journal = traffic.journal
    return journal if isinstance(journal, _Segments) else None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Generator[None, Any,
                                                                                                          Any]:
    segments = _segments()
    if segments is None:
        return (yield)
    with segments.segment(fixture_segment_key(fixturedef, request)):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    segments = _segments()
    if segments is None:
        return (yield)
    with segments.segment(item.nodeid):
        return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_STARTED] = time.time_ns()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    try:
        _write_if_wanted(item, call, report)
    except Exception as exc:  # never turn a test result into an internal error
        _attach(report, f"artifacts: not written ({exc!r})")
    return report


def outcome_of(report: pytest.TestReport) -> str:
    """pytest's words: a failure outside the test function (a fixture) is an "error"."""
    return "error" if report.failed and report.when != "call" else report.outcome


def cause_of(call: pytest.CallInfo[None]) -> str | None:
    """The failure's stable cause code (ExpectationFailed.cause), else the exception type; None on success."""
    if call.excinfo is None:
        return None
    exc = call.excinfo.value
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, str) else type(exc).__name__


def stack_of(item: pytest.Item) -> Any | None:
    """The stack the test used, also when its set-up failed before ``funcargs`` was filled."""
    funcargs = getattr(item, "funcargs", {}) or {}
    for name in STACK_FIXTURES:
        if name in funcargs:
            return funcargs[name]
    info = getattr(item, "_fixtureinfo", None)
    for name in STACK_FIXTURES:
        defs = info.name2fixturedefs.get(name) if info is not None else None
        cached = getattr(defs[-1], "cached_result", None) if defs else None
        if cached is not None and cached[2] is None:  # (value, key, exc_info): set up without error
            return cached[0]
    return None


def _write_if_wanted(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
    mode = item.config.getoption("otelgate_artifacts", "failed")
    if mode == "none" or report.when not in ("setup", "call"):
        return
    wanted = report.failed or (mode == "all" and report.when == "call" and report.passed)
    if not wanted:
        return
    stack = stack_of(item)
    if stack is None or getattr(stack, "name", None) == "replay":
        return
    started = item.stash.get(_STARTED, int(call.start * 1e9))
    window = Window(started, time.time_ns())
    result = TestResult(test_id=item.nodeid, outcome=outcome_of(report), when=report.when, cause=cause_of(call),
                        text=report.longreprtext if report.failed else "",
                        summary=call.excinfo.exconly() if call.excinfo is not None else "", window=window)
    recorder = item.config.stash.get(_RECORDER, None)
    journal = request_ids = None
    if recorder is not None:
        journal = {**recorder.to_json(), "stack": {"name": getattr(stack, "name", None),
                                                   "kong_deployment_name": getattr(stack, "kong_deployment_name",
                                                                                   None)}}
        request_ids = recorder.request_ids_between(window.start_ns, window.end_ns)
    path = write_artifacts(artifacts_root(item.config), result, stack, journal=journal,
                           request_ids=request_ids or [])
    _attach(report, f"artifacts: {path}")


def _attach(report: pytest.TestReport, line: str) -> None:
    """Put ``line`` where people and CI look: the failure text and the crash message (JUnit ``message``)."""
    longrepr = report.longrepr
    if not report.failed:
        report.sections.append(("otelgate", line))
        return
    if isinstance(longrepr, str):
        report.longrepr = f"{longrepr}\n{line}"
        return
    addsection = getattr(longrepr, "addsection", None)
    if addsection is not None:
        addsection("otelgate", line)
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        # second line: the terminal's one-line summary keeps the cause, and JUnit's shortened `message` keeps both
        first, newline, rest = crash.message.partition("\n")
        crash.message = f"{first}\n{line}{newline}{rest}"
