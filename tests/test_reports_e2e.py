"""Failure artifacts end to end, on the real local stack: a child pytest runs a claim that holds and the same claim
under a negative-control fault (``tests/child/fault_on_purpose.py``), with artifacts for every test. Then:
the failure text (terminal and JUnit XML) names the artifacts folder; the folder holds the trace tree, the HTML page,
the dump and the stack's diagnostics; headless Chromium renders the waterfall with the expected services and span
names (a screenshot is kept under ``artifacts/reports-e2e/``); ``otelgate replay`` passes on the passing run's dump
and fails with the same cause on the failing run's; the sink token appears in no file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html.parser import HTMLParser
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from otelgate.pytest_plugin import require_collector
from otelgate.reports import pytest_plugin
from otelgate.reports.artifacts import folder_name
from otelgate.sink.testing import fake_token

REPO_ROOT = Path(__file__).resolve().parents[1]
CHILD_MODULE = "tests/child/fault_on_purpose.py"
PASSING_ID = f"{CHILD_MODULE}::test_the_trace_claim_holds"
FAILING_ID = f"{CHILD_MODULE}::test_the_trace_claim_fails_under_a_negative_control_fault"
SUITE_ID = "suites/test_traces.py::test_one_request_is_one_trace_from_kong_through_coupon_to_membership"
DYNATRACE_TOKEN = re.compile(rb"dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars")

pytestmark = [pytest.mark.stack, pytest.mark.collector]


def find_chromium() -> str:
    """Debian's chromium (``apt-get install chromium``); required where nothing may be skipped (CI)."""
    for candidate in (os.environ.get("OTELGATE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(candidate) if candidate else None
        if path:
            return path
    message = "headless Chromium is needed to check the HTML view (Debian: apt-get install -y chromium)"
    if os.environ.get("OTELGATE_REQUIRE_COLLECTOR") == "1" or os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def chromium(binary: str, profile: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run with a fresh profile and no network beyond the file it opens."""
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class ChildRun:
    artifacts: Path
    junit: Path
    output: str
    returncode: int
    token: str = field(repr=False)


def plugin_is_an_entry_point() -> bool:
    """Registered under another name already, ``-p`` would register the module twice (an error)."""
    return any(ep.value == pytest_plugin.__name__ for ep in entry_points(group="pytest11"))


@pytest.fixture(scope="module")
def child_run(tmp_path_factory: pytest.TempPathFactory) -> ChildRun:
    require_collector()
    base = tmp_path_factory.mktemp("reports-e2e")
    token = fake_token()
    env = {**os.environ, "OTELGATE_REPORTS_CHILD": "1", "OTELGATE_REPORTS_CHILD_TOKEN": token,
           "OTELGATE_ARTIFACTS": str(base / "artifacts")}
    plugin = [] if plugin_is_an_entry_point() else ["-p", pytest_plugin.__name__]
    args = [sys.executable, "-m", "pytest", CHILD_MODULE, SUITE_ID, "--stack=local", "--otelgate-artifacts=all",
            "-p", "no:cacheprovider", f"--junitxml={base / 'junit.xml'}", "-q", *plugin]
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=280, check=False)
    return ChildRun(base / "artifacts", base / "junit.xml", done.stdout + done.stderr, done.returncode, token)


@pytest.fixture(scope="module")
def kept(artifacts_dir: Path) -> Path:
    """Where this test keeps what a person may want to look at (screenshots, the failing run's folder)."""
    path = artifacts_dir / "reports-e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_child_run_failed_exactly_where_it_should(child_run: ChildRun) -> None:
    assert child_run.returncode == 1, child_run.output[-4000:]
    assert "1 failed, 2 passed" in child_run.output, child_run.output[-4000:]


def test_the_failure_text_names_the_artifacts_folder_in_terminal_and_junit(child_run: ChildRun) -> None:
    folder = child_run.artifacts / folder_name(FAILING_ID)
    assert f"artifacts: {folder}" in child_run.output, child_run.output[-4000:]
    cases = {f"{c.get('classname')}::{c.get('name')}": c for c in ET.parse(child_run.junit).iter("testcase")}
    failing = next(c for key, c in cases.items() if key.endswith("test_the_trace_claim_fails_under_a_negative_"
                                                                  "control_fault"))
    failure = failing.find("failure")
    assert failure is not None, ET.tostring(failing, encoding="unicode")[:2000]
    assert f"artifacts: {folder}" in (failure.get("message") or "")
    assert f"artifacts: {folder}" in (failure.text or "")
    assert "[BROKEN_PATH]" in (failure.get("message") or "")


def test_the_folder_holds_tree_page_dump_and_diagnostics(child_run: ChildRun, kept: Path) -> None:
    folder = child_run.artifacts / folder_name(FAILING_ID)
    for name in ("failure.txt", "traces.txt", "report.html", "sink-dump.json", "README.txt"):
        assert (folder / name).is_file(), f"{name} missing in {sorted(p.name for p in folder.iterdir())}"
    assert "[BROKEN_PATH]" in (folder / "failure.txt").read_text()
    tree = (folder / "traces.txt").read_text()
    assert "kong-otel | kong [SERVER]" in tree and "kong.balancer [CLIENT]" in tree, tree
    dump = json.loads((folder / "sink-dump.json").read_text())
    assert dump["otelgate_dump"] == 1 and dump["spans"], "the dump holds what the sink received"
    journal = dump["otelgate_journal"]
    assert journal["tests"] == [FAILING_ID]
    assert journal["outcomes"][FAILING_ID] == {"outcome": "failed", "when": "call", "cause": "BROKEN_PATH"}
    diagnostics = folder / "diagnostics"
    assert any(diagnostics.rglob("*.log")), f"no process logs in {diagnostics}"
    shutil.copytree(folder, kept / "failing-run", dirs_exist_ok=True)


def test_no_artifact_contains_the_sink_token(child_run: ChildRun) -> None:
    files = [p for p in child_run.artifacts.rglob("*") if p.is_file()]
    assert len(files) > 10, f"too few files to mean anything: {files}"
    token = child_run.token.encode()
    leaks = [str(p) for p in files if token in p.read_bytes() or DYNATRACE_TOKEN.search(p.read_bytes())]
    assert not leaks, f"token found in {leaks}"
    assert child_run.token not in child_run.output


class WaterfallRows(HTMLParser):
    """(trace id, focused, service, span name) of every waterfall row in a rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, bool, str, str]] = []
        self._trace = ("", False)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "article" and "trace" in (values.get("class") or "").split():
            self._trace = (values.get("data-trace-id") or "", values.get("data-focus") == "true")
        elif tag == "details" and "span" in (values.get("class") or "").split():
            self.rows.append((*self._trace, values.get("data-service") or "", values.get("data-name") or ""))


def rendered_rows(binary: str, page: Path, profile: Path) -> list[tuple[str, bool, str, str]]:
    done = chromium(binary, profile, "--dump-dom", page.as_uri())
    assert done.returncode == 0 and "<article" in done.stdout, done.stderr[-2000:]
    parser = WaterfallRows()
    parser.feed(done.stdout)
    return parser.rows


def test_chromium_shows_the_broken_trace_as_waterfalls(child_run: ChildRun, kept: Path, tmp_path: Path) -> None:
    binary = find_chromium()
    page = child_run.artifacts / folder_name(FAILING_ID) / "report.html"
    rows = rendered_rows(binary, page, tmp_path / "profile-dom")
    focused = {(service, name) for _, focus, service, name in rows if focus}
    assert {("kong-otel", "kong"), ("kong-otel", "kong.balancer")} <= focused, focused
    # the fault cut propagation: coupon and membership arrive as a trace of their own, shown next to Kong's
    others = {(service, name) for _, focus, service, name in rows if not focus}
    assert ("coupon", "GET /coupons") in others and any(s == "membership" for s, _ in others), others
    shot = kept / "failing-run-waterfall.png"
    done = chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,1600",
                    page.as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]


def test_chromium_shows_the_whole_trace_of_the_passing_run(child_run: ChildRun, kept: Path, tmp_path: Path) -> None:
    binary = find_chromium()
    page = child_run.artifacts / folder_name(PASSING_ID) / "report.html"
    rows = rendered_rows(binary, page, tmp_path / "profile-dom")
    by_trace: dict[str, set[tuple[str, str]]] = {}
    for trace_id, focus, service, name in rows:
        if focus:
            by_trace.setdefault(trace_id, set()).add((service, name))
    assert any({("kong-otel", "kong"), ("kong-otel", "kong.balancer"), ("coupon", "GET /coupons")} <= spans
               and any(s == "membership" for s, _ in spans) for spans in by_trace.values()), by_trace
    shot = kept / "passing-run-waterfall.png"
    done = chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,1000",
                    page.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]


def replay(dump: Path, *paths: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTELGATE_REPORTS_CHILD": "1"}
    env.pop("OTELGATE_REPORTS_CHILD_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "otelgate", "replay", str(dump), "--", *paths,
                           "-p", "no:cacheprovider", "-q"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_replay_of_the_passing_run_passes(child_run: ChildRun) -> None:
    # the child's stack is gone (its pytest exited): the replay has only the dump
    done = replay(child_run.artifacts / folder_name(PASSING_ID) / "sink-dump.json", CHILD_MODULE)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"same: {PASSING_ID}: recorded passed, replayed passed" in done.stdout, done.stdout[-3000:]
    assert "replay reproduces the recording" in done.stdout


def test_replay_of_the_failing_run_fails_with_the_same_cause(child_run: ChildRun) -> None:
    done = replay(child_run.artifacts / folder_name(FAILING_ID) / "sink-dump.json", CHILD_MODULE)
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]
    assert "[BROKEN_PATH]" in done.stdout, done.stdout[-4000:]
    assert (f"same: {FAILING_ID}: recorded failed [BROKEN_PATH], replayed failed [BROKEN_PATH]"
            in done.stdout), done.stdout[-3000:]


def test_replay_of_a_passing_suite_run_passes(child_run: ChildRun) -> None:
    """The suites themselves, warm-up included (replayed from its own journal segment), default suites path."""
    done = replay(child_run.artifacts / folder_name(SUITE_ID) / "sink-dump.json")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"same: {SUITE_ID}: recorded passed, replayed passed" in done.stdout, done.stdout[-3000:]
