"""The artifacts plugin and replay without the collector: a child pytest runs the real trace claim (and the real
warm-up) against a small synthetic stack — a real sink, and a stand-in gateway that posts a Kong -> coupon ->
membership trace per request, or a broken one under the propagation fault. Checks: the failure text and JUnit XML
name the folder; set-up failures get artifacts too; the token is scrubbed even from a diagnostics file that held
it; ``--otelgate-artifacts=none`` writes nothing; replay reproduces pass, call failure and set-up failure.

The real-stack version of this is ``tests/test_reports_e2e.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from otelgate.reports import pytest_plugin
from otelgate.reports.artifacts import folder_name
from otelgate.sink.testing import fake_token

REPO_ROOT = Path(__file__).resolve().parents[1]

SYNTHETIC_STACK = '''
"""A synthetic stack for the reports plugin's tests (see tests/test_reports_plugin.py)."""
import os
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from otelgate.claims import Timing
from otelgate.sink.server import SinkServer
from otelgate.sink.testing import new_span_id, new_trace_id, post_otlp, span, traces_request
from otelgate.stacks.base import StackSettings

SERVER, CLIENT = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT


class SyntheticStack:
    name = "synthetic"
    kong_deployment_name = "kong"

    def __init__(self):
        self._token = os.environ["SYNTHETIC_TOKEN"]
        self.settings = StackSettings()
        self.timing = Timing(signal=2.0, settle=1.0, scrape=1.0)
        self.server = SinkServer(profile="dynatrace", token=self._token).start()
        self.sink = self.server.client
        stack = self

        class Gateway(BaseHTTPRequestHandler):
            def do_GET(self):
                request_id = uuid.uuid4().hex
                stack.emit_trace(request_id)
                self.send_response(200)
                self.send_header("X-Kong-Request-Id", request_id)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.gateway = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
        threading.Thread(target=self.gateway.serve_forever, daemon=True).start()
        self.gateway_url = f"http://127.0.0.1:{self.gateway.server_address[1]}"

    def propagation_cut(self):
        injected = self.settings.kong_plugin_config.get("opentelemetry", {}).get("propagation", {}).get("inject")
        return injected == []

    def emit_trace(self, request_id):
        trace_id, kong, balancer, coupon, client = new_trace_id(), *(new_span_id() for _ in range(4))
        upstream_trace, upstream_parent = (new_trace_id(), b"") if self.propagation_cut() else (trace_id, balancer)
        added = {"kong.deployment.name": self.kong_deployment_name}  # what the collector's attributes/kong inserts
        batches = [
            ("kong-otel", [span("kong", trace_id, kong, kind=SERVER,
                                attributes={"kong.request.id": request_id, **added}),
                           span("kong.balancer", trace_id, balancer, kong, kind=CLIENT, attributes=added)]),
            ("coupon", [span("GET /coupons", upstream_trace, coupon, upstream_parent, kind=SERVER, attributes=added),
                        span("GET", upstream_trace, client, coupon, kind=CLIENT, attributes=added)]),
            ("membership", [span("GET /isMember", upstream_trace, new_span_id(), client, kind=SERVER,
                                 attributes=added)]),
        ]
        for service, spans in batches:
            post_otlp(self.server.signal_url("traces"), traces_request(spans, service), self._token)

    def reconfigure(self, **changes):
        self.settings = self.settings.with_changes(**changes)

    def diagnose(self, dest):
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        # as a careless component might: the last line of defence must catch it
        (dest / "gateway.log").write_text(f"exporter header Authorization: Api-Token {self._token}\\n")
        return dest

    def close(self):
        self.gateway.shutdown()
        self.server.stop()


@pytest.fixture(scope="session")
def stack():
    running = SyntheticStack()
    yield running
    running.close()
'''

CHILD_TESTS = '''
import pytest

from otelgate import claims
from otelgate.negative import CONTROLS

TRACE_FAULT = next(c for c in CONTROLS if "BROKEN_PATH" in getattr(c.must_fail.get("traces"), "causes", ()))


@pytest.fixture
def warm_stack(stack):
    claims.warm_up(stack)  # the synthetic gateway sends no logs or metrics: WARM_UP
    return stack


def test_holds(stack):
    claims.check_trace_spans_services(stack)


def test_broken_by_the_fault(stack):
    with claims.applied(stack, **TRACE_FAULT.changes):
        claims.check_trace_spans_services(stack)


def test_warm_up_fails(warm_stack):
    pass
'''


@dataclass
class Child:
    root: Path
    artifacts: Path
    output: str
    returncode: int
    token: str = field(repr=False)

    def folder(self, test: str) -> Path:
        return self.artifacts / folder_name(f"test_child.py::{test}")


def reports_plugin_args() -> list[str]:
    """``-p`` the plugin unless an entry point already loads it (registering it twice is an error)."""
    loaded = any(ep.value == pytest_plugin.__name__ for ep in entry_points(group="pytest11"))
    return [] if loaded else ["-p", pytest_plugin.__name__]


def run_child(root: Path, token: str, *extra: str) -> Child:
    (root / "synthetic_stack.py").write_text(SYNTHETIC_STACK)
    (root / "test_child.py").write_text(textwrap.dedent(CHILD_TESTS))
    env = {**os.environ, "SYNTHETIC_TOKEN": token, "OTELGATE_ARTIFACTS": str(root / "artifacts"),
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    # the synthetic stack's `stack` must not lose to otelgate.pytest_plugin's (entry point "otelgate")
    args = [sys.executable, "-m", "pytest", "test_child.py", f"--rootdir={root}", "-p", "no:cacheprovider",
            "-p", "no:otelgate", "-p", "synthetic_stack", *reports_plugin_args(),
            f"--junitxml={root / 'junit.xml'}", *extra]
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)
    return Child(root, root / "artifacts", done.stdout + done.stderr, done.returncode, token)


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> Child:
    return run_child(tmp_path_factory.mktemp("plugin-child"), fake_token(), "--otelgate-artifacts=all")


def test_each_outcome_is_reported_with_its_artifacts_folder(child: Child) -> None:
    assert child.returncode == 1 and "1 failed, 1 passed, 1 error" in child.output, child.output[-3000:]
    for test in ("test_broken_by_the_fault", "test_warm_up_fails"):
        assert f"artifacts: {child.folder(test)}" in child.output, child.output[-3000:]
    cases = {c.get("name"): c for c in ET.parse(child.root / "junit.xml").iter("testcase")}
    failure = cases["test_broken_by_the_fault"].find("failure")
    error = cases["test_warm_up_fails"].find("error")
    assert failure is not None and error is not None
    for element in (failure, error):
        assert "artifacts: " in (element.get("message") or "") and "artifacts: " in (element.text or "")
    assert "[BROKEN_PATH]" in (failure.get("message") or "")
    assert child.folder("test_holds").is_dir(), "--otelgate-artifacts=all keeps passing runs too"


def test_the_folders_hold_what_a_person_needs(child: Child) -> None:
    broken = child.folder("test_broken_by_the_fault")
    assert sorted(p.name for p in broken.iterdir()) == ["README.txt", "diagnostics", "failure.txt", "report.html",
                                                        "sink-dump.json", "traces.txt"]
    tree = (broken / "traces.txt").read_text()
    assert "kong-otel | kong [SERVER]" in tree and "coupon" not in tree, "Kong's trace, cut after the balancer"
    outcome = json.loads((broken / "sink-dump.json").read_text())["otelgate_journal"]["outcomes"]
    assert outcome == {"test_child.py::test_broken_by_the_fault": {"outcome": "failed", "when": "call",
                                                                   "cause": "BROKEN_PATH"}}
    setup = json.loads((child.folder("test_warm_up_fails") / "sink-dump.json").read_text())["otelgate_journal"]
    assert setup["outcomes"]["test_child.py::test_warm_up_fails"]["cause"] == "WARM_UP"
    assert "[WARM_UP]" in (child.folder("test_warm_up_fails") / "failure.txt").read_text()


def test_the_token_is_in_no_file_even_where_a_component_wrote_it(child: Child) -> None:
    files = [p for p in child.artifacts.rglob("*") if p.is_file()]
    assert [p for p in files if p.name == "gateway.log"], "the diagnostics that held the token were written"
    assert not [p for p in files if child.token.encode() in p.read_bytes()]
    assert child.token not in child.output


def replay(child: Child, test: str, *extra: str) -> subprocess.CompletedProcess[str]:
    dump = child.folder(test) / "sink-dump.json"
    return subprocess.run([sys.executable, "-m", "otelgate", "replay", str(dump), *extra, "--", "test_child.py",
                           f"--rootdir={child.root}", "-p", "no:cacheprovider", "-q"],
                          cwd=child.root, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("test", "recorded"), [
    ("test_holds", "passed"),
    ("test_broken_by_the_fault", "failed [BROKEN_PATH]"),
    ("test_warm_up_fails", "error [WARM_UP]"),
])
def test_replay_reproduces_the_recorded_outcome(child: Child, test: str, recorded: str) -> None:
    done = replay(child, test, "--compare")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"same: test_child.py::{test}: recorded {recorded}, replayed {recorded}" in done.stdout, done.stdout
    assert f"1 {recorded.split()[0]}" in done.stdout and "2 deselected" in done.stdout, done.stdout[-2000:]


def test_replay_without_a_journal_says_what_is_missing(child: Child, tmp_path: Path) -> None:
    dump = json.loads((child.folder("test_holds") / "sink-dump.json").read_text())
    del dump["otelgate_journal"]
    (tmp_path / "plain.json").write_text(json.dumps(dump))
    done = subprocess.run([sys.executable, "-m", "otelgate", "replay", str(tmp_path / "plain.json")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "has no journal" in done.stderr


def test_artifacts_none_writes_nothing(tmp_path: Path) -> None:
    quiet = run_child(tmp_path, fake_token(), "--otelgate-artifacts=none", "-k", "broken")
    assert quiet.returncode == 1 and "artifacts:" not in quiet.output, quiet.output[-2000:]
    assert not quiet.artifacts.exists() or not any(quiet.artifacts.iterdir())
