"""The local stack end to end: one request through the gateway, seen in the sink as a linked trace, DELTA metrics
and an access log joining the trace; reconfiguration; bring-up time; and a teardown that leaves nothing behind."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from otelgate.procs import port_is_open
from otelgate.pytest_plugin import require_collector
from otelgate.stacks.base import Stack
from otelgate.stacks.local import KONG_SERVICE_NAME, LocalStack, StackStartError
from otelgate.waiting import poll_until, wait_stable

REQUEST_COUNTER = "kong_http_requests_total"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
BRING_UP_BUDGET_S = float(os.environ.get("OTELGATE_BRINGUP_BUDGET_S", "15"))


@pytest.fixture(scope="module")
def local(stack: Stack) -> LocalStack:
    if not isinstance(stack, LocalStack):
        pytest.skip("these tests are about the local stack (run with --stack local)")
    return stack


@dataclass(frozen=True)
class Request:
    request_id: str
    trace_id: str
    spans: list[dict[str, Any]]
    access_logs: tuple[dict[str, Any], ...] = ()


def _kong_root(local: LocalStack, request_id: str) -> dict[str, Any]:
    roots = poll_until(
        lambda: [s for s in local.sink.spans(service=KONG_SERVICE_NAME, name="kong")
                 if s["attributes"].get("kong.request.id") == request_id],
        bool, what=f"the kong span with kong.request.id={request_id} in the sink", timeout=20)
    assert len(roots) == 1, f"one kong root per request, got {len(roots)}"
    return roots[0]


def _settled_trace(local: LocalStack, trace_id: str, min_spans: int) -> list[dict[str, Any]]:
    def spans() -> tuple[tuple[str, str], ...]:
        return tuple(sorted((s["span_id"], s["name"]) for s in local.sink.spans(trace_id=trace_id)))

    wait_stable(spans, what=f"trace {trace_id} to stop growing", timeout=20, quiet=1.0,
                ready=lambda found: len(found) >= min_spans)
    return list(local.sink.spans(trace_id=trace_id))


def _get_coupons(local: LocalStack) -> Request:
    response = httpx.get(f"{local.gateway_url}/coupon/coupons", timeout=10.0)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-kong-request-id"]
    trace_id = _kong_root(local, request_id)["trace_id"]
    return Request(request_id, trace_id, _settled_trace(local, trace_id, min_spans=4))


@pytest.fixture(scope="module")
def coupon_request(local: LocalStack) -> Request:
    """One request, complete in the sink (trace settled and its access log stored) before any test of the module
    runs: tests that restart Kong or the collector may run next, and a restart loses what is still queued."""
    request = _get_coupons(local)
    logs = poll_until(lambda: _access_logs(local, request.request_id), bool,
                      what=f"the access log of request {request.request_id}", timeout=20)
    return replace(request, access_logs=tuple(logs))


def _one(spans: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [s for s in spans if all(s.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected exactly one span {match}, found {len(found)}: {[s['name'] for s in spans]}"
    return found[0]


def test_one_coupon_request_is_one_trace_from_kong_through_coupon_to_membership(coupon_request: Request) -> None:
    spans = coupon_request.spans
    assert {s["trace_id"] for s in spans} == {coupon_request.trace_id}
    roots = [s for s in spans if not s["parent_span_id"]]
    assert [(r["name"], r["service_name"]) for r in roots] == [("kong", KONG_SERVICE_NAME)]
    balancer = _one(spans, name="kong.balancer", service_name=KONG_SERVICE_NAME)
    coupon_server = _one(spans, service_name="coupon", kind="SERVER")
    coupon_client = _one(spans, service_name="coupon", kind="CLIENT")
    membership_server = _one(spans, service_name="membership", kind="SERVER")
    assert coupon_server["parent_span_id"] == balancer["span_id"]
    assert coupon_client["parent_span_id"] == coupon_server["span_id"]
    assert membership_server["parent_span_id"] == coupon_client["span_id"]
    ids = {s["span_id"] for s in spans}
    assert all(s["parent_span_id"] in ids for s in spans if s["parent_span_id"]), "no orphan spans"


def _coupon_request_points(local: LocalStack) -> list[dict[str, Any]]:
    return [p for p in local.sink.metric_points(name=REQUEST_COUNTER) if p["attributes"].get("service") == "coupon"]


def test_kong_metrics_arrive_as_delta(local: LocalStack, coupon_request: Request) -> None:
    # The first scrape of a new series is the baseline of cumulative_to_delta (its count is not a delta), and the
    # session's stack may have served coupon traffic before this test (the fixture's request among it): wait for a
    # coupon point scraped after all that, then count fresh requests in the points that follow it.
    quiet_since = time.time_ns()
    baseline = poll_until(
        lambda: [p for p in _coupon_request_points(local) if int(p["time_unix_nano"]) > quiet_since], bool,
        what=f"a {REQUEST_COUNTER} point of service coupon scraped after the earlier traffic", timeout=30)
    since = max(int(p["time_unix_nano"]) for p in baseline)
    sent = 3
    for _ in range(sent):
        assert httpx.get(f"{local.gateway_url}/coupon/coupons", timeout=10.0).status_code == 200

    def counted() -> float:
        return sum(p["value"] or 0 for p in _coupon_request_points(local) if int(p["time_unix_nano"]) > since)

    total = wait_stable(counted, what=f"the DELTA points after the baseline to add up to {sent} requests",
                        timeout=40, quiet=6.0, ready=lambda value: value >= sent)
    assert total == sent
    kong_sums = [p for p in local.sink.metric_points() if str(p["name"]).startswith("kong_") and p["type"] == "sum"]
    assert kong_sums and {p["temporality"] for p in kong_sums} == {"DELTA"}
    assert {p["attributes"].get("kong.deployment.name") for p in kong_sums} == {local.kong_deployment_name}
    assert not local.sink.rejections(signal="metrics")


def _attribute(record: dict[str, Any], dotted: str) -> Any:
    """An attribute as the sink stores it (Dynatrace flattens maps to dotted keys), nested as a fallback."""
    attributes = record["attributes"]
    if dotted in attributes:
        return attributes[dotted]
    value: Any = attributes
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _access_logs(local: LocalStack, request_id: str) -> list[dict[str, Any]]:
    return [r for r in local.sink.logs() if _attribute(r, "request.id") == request_id]


def test_access_log_carries_the_plain_trace_id_of_its_trace(coupon_request: Request) -> None:
    logs = coupon_request.access_logs
    assert len(logs) == 1
    record = logs[0]
    assert _attribute(record, "trace_id") == coupon_request.trace_id
    assert HEX32.match(_attribute(record, "trace_id"))
    assert record["trace_id"] == coupon_request.trace_id  # the collector's trace_parser set the LogRecord's id


def test_reconfigure_applies_kong_plugin_overrides_and_restores(local: LocalStack) -> None:
    local.reconfigure(kong_plugin_config={"tcp-log": {"custom_fields_by_lua": None}})
    try:
        wrapped = _get_coupons(local)
        record = poll_until(lambda: _access_logs(local, wrapped.request_id), bool,
                            what="the access log without the Lua snippet", timeout=20)[0]
        # Kong's own shape {"w3c": id}, unrewritten (flattened by the sink as Dynatrace does)
        assert _attribute(record, "trace_id.w3c") == wrapped.trace_id
        assert _attribute(record, "trace_id") is None
    finally:
        local.reconfigure(kong_plugin_config={})
    plain = _get_coupons(local)
    record = poll_until(lambda: _access_logs(local, plain.request_id), bool,
                        what="the access log with the snippet restored", timeout=20)[0]
    assert _attribute(record, "trace_id") == plain.trace_id


def test_reconfigure_restarts_the_collector_for_collector_settings(local: LocalStack) -> None:
    before = local.collector_pid()
    assert before is not None and psutil.pid_exists(before)
    local.reconfigure(drop_processors=("cumulative_to_delta",))
    try:
        during = local.collector_pid()
        assert during is not None and during != before
        assert "cumulative_to_delta" not in (local.workdir / "config" / "collector.yaml").read_text().split(
            "processors:")[-1]
    finally:
        local.reconfigure(drop_processors=())
    assert local.collector_pid() not in (None, before)
    _get_coupons(local)  # the pipeline works again after the restore
    # the faulty collector's cumulative points were rejected by the sink (as designed); later suites must not see them
    local.sink.reset()


def test_reconfigure_restarts_the_simulator_for_kong_conf_settings(local: LocalStack) -> None:
    before = local.processes["kong"].pid
    local.reconfigure(tracing_sampling_rate=0.5)
    try:
        kong = local.processes["kong"]
        assert kong.pid != before and kong.alive()
        assert kong.argv[kong.argv.index("--tracing-sampling-rate") + 1] == "0.5"
    finally:
        local.reconfigure(tracing_sampling_rate=1.0)
    _get_coupons(local)  # traced again at 1.0


def test_reconfigure_refuses_bad_input_and_keeps_the_running_config(local: LocalStack) -> None:
    settings = local.settings
    with pytest.raises(ValueError, match="unknown stack settings"):
        local.reconfigure(sampling_ratio=0.5)
    with pytest.raises(ValueError):  # the simulator's schema check, before anything is sent
        local.reconfigure(kong_plugin_config={"tcp-log": {"no_such_field": 1}})
    assert local.settings == settings
    _get_coupons(local)


def test_local_stack_implements_the_stack_protocol(local: LocalStack) -> None:
    assert isinstance(local, Stack)
    assert local.name == "local"
    urls = local.urls()
    assert urls["gateway (Kong simulator proxy)"] == local.gateway_url
    assert httpx.get(urls["collector health"], timeout=5.0).status_code == 200
    assert "kong_http_requests_total" in httpx.get(urls["kong status API (/metrics)"], timeout=5.0).text


def test_the_token_is_never_written(local: LocalStack, tmp_path: Path) -> None:
    token = local._token
    folder = local.diagnose(tmp_path / "diagnosis")
    written = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"summary.txt", "sink-dump.json", "collector.yaml", "kong.yaml"}
    summary = (folder / "summary.txt").read_text()
    assert "canary trace: " in summary and "services " in summary
    # the simulator's losses (spans dropped, tcp-log lines lost) are where a person reading diagnostics sees them
    assert re.search(r"kong simulator lost \(its status API\): \d+ spans dropped, \d+ tcp-log lines", summary), summary
    for path in [*written, *local.workdir.rglob("*")]:
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert token not in path.read_text(errors="replace"), f"token found in {path}"


# --- bring-up time and teardown: a stack of its own ----------------------------------------------------------------


def _otelgate_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if "otelgate" in cmdline or "otelcol" in cmdline:
            found.append(child)
    return found


@pytest.fixture
def own_stack_dir(tmp_path: Path) -> Iterator[Path]:
    require_collector()
    before = {p.pid for p in _otelgate_children()}  # the session stack's processes are not ours to judge
    yield tmp_path
    leftover = [p for p in _otelgate_children() if p.pid not in before]
    assert not leftover, f"processes left behind: {[(p.pid, p.cmdline()) for p in leftover]}"


def test_bring_up_is_fast_and_close_leaves_no_process_or_port(own_stack_dir: Path) -> None:
    before = {p.pid for p in _otelgate_children()}
    stack = LocalStack.start(workdir=own_stack_dir)
    try:
        print(f"\nlocal stack bring-up to first green canary: {stack.bring_up_seconds:.2f} s")
        assert stack.bring_up_seconds is not None and stack.bring_up_seconds < BRING_UP_BUDGET_S
        pids = {p.pid for p in _otelgate_children()} - before
        assert len(pids) >= 6, f"sink, collector, 4 services, kong expected; saw {pids}"
        ports = stack.bound_ports()
        assert len(ports) == 14  # sink, 4 services, proxy/status/admin, 6 collector ports
        assert all(port_is_open("127.0.0.1", port) for port in
                   [stack.ports.sink, stack.ports.proxy, *stack.ports.services.values()])
    finally:
        stack.close()
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert [port for port in ports if port_is_open("127.0.0.1", port)] == []


def _assert_all_stopped(stack: LocalStack) -> None:
    assert stack.processes, "the bring-up started nothing, so the test proves nothing"
    assert [name for name, proc in stack.processes.items() if proc.alive()] == []
    assert [port for port in stack.bound_ports() if port_is_open("127.0.0.1", port)] == []


def test_a_failed_bring_up_tears_down_what_it_started(own_stack_dir: Path) -> None:
    stack = LocalStack(workdir=own_stack_dir, collector_binary=Path("/bin/false"))
    with pytest.raises((StackStartError, RuntimeError)) as failure:
        stack.bring_up()
    assert "collector" in str(failure.value).lower()
    assert "sink" in stack.processes
    _assert_all_stopped(stack)


def test_ctrl_c_during_bring_up_tears_down(own_stack_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: LocalStack) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalStack, "_start_kong", interrupted)
    stack = LocalStack(workdir=own_stack_dir)
    with pytest.raises(KeyboardInterrupt):
        stack.bring_up()
    assert {"sink", "coupon", "membership"} <= set(stack.processes)
    _assert_all_stopped(stack)


# --- `otelgate up` -------------------------------------------------------------------------------------------------


def test_up_dry_run_prints_the_plan_and_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    from otelgate.cli import main

    assert main(["up", "--stack", "local", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "kong.yaml" in out and "collector.yaml" in out and "canary" in out


def test_up_check_prerequisites_names_what_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from otelgate.cli import main

    monkeypatch.setenv("OTELGATE_COLLECTOR", "/nonexistent/otelcol")
    assert main(["up", "--check-prerequisites"]) == 1
    assert "collector" in capsys.readouterr().err


def test_up_reaches_every_stack_through_its_stack_module(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from otelgate.cli import main
    from otelgate.stacks import registry
    from otelgate.stacks.base import StackModule, StackOptions

    seen: list[StackOptions] = []

    class FakeDocker:
        name = "docker"

        def plan(self, options: StackOptions) -> list[str]:
            seen.append(options)
            return ["step one", "step two"]

        def check_prerequisites(self, options: StackOptions) -> list[str]:
            return ["docker engine not reachable"]

        def start(self, options: StackOptions) -> Stack:
            raise AssertionError("not called by these commands")

        def up(self, options: StackOptions, status_interval: float) -> int:
            seen.append(options)
            return 7

    assert isinstance(FakeDocker(), StackModule)
    monkeypatch.setitem(registry._LOADERS, "docker", FakeDocker)
    assert main(["up", "--stack", "docker", "--dry-run", "--sampling-rate", "0.25"]) == 0
    assert "step two" in capsys.readouterr().out
    assert seen[-1].settings.sampling_rate == 0.25, "the command line reaches the stack as StackOptions"
    assert main(["up", "--stack", "docker", "--check-prerequisites"]) == 1
    captured = capsys.readouterr()
    assert "missing: docker engine not reachable" in captured.err and "1 problem(s)" in captured.out
    assert main(["up", "--stack", "docker", "--keep", "--status-interval", "1"]) == 7
    assert seen[-1].keep
    for name in registry.STACK_NAMES:
        if name != "docker":
            assert isinstance(registry.stack_module(name), StackModule), name


def test_up_runs_the_stack_until_ctrl_c_and_leaves_nothing(own_stack_dir: Path) -> None:
    import signal
    import subprocess
    import sys
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "otelgate", "up", "--workdir", str(own_stack_dir),
                             "--status-interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    try:
        gateway = poll_until(lambda: [ln.split()[-1] for ln in lines if ln.strip().startswith("gateway")], bool,
                             what="`otelgate up` to print the gateway URL", timeout=60)[0]
        assert httpx.get(f"{gateway}/coupon/coupons", timeout=10.0).status_code == 200
        poll_until(lambda: [ln for ln in lines if " sink: traces " in ln], bool, what="a status line", timeout=10)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 7
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    output = "".join(lines)
    assert rc == 0, output
    assert "stopped; no process left" in output
    assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []


def test_a_stack_module_refuses_a_manifests_folder_it_did_not_load(tmp_path: Path) -> None:
    """Stack modules read their manifests folder when imported; asked for another one later, they say so clearly
    instead of silently deploying the first one."""
    from otelgate.stacks.base import StackOptions, StackStartError
    from otelgate.stacks.registry import stack_module

    other = StackOptions(manifests=tmp_path)
    for name in ("local", "docker"):
        module = stack_module(name)
        (problem,) = module.check_prerequisites(other)
        assert str(tmp_path) in problem and "OTELGATE_MANIFESTS" in problem
        with pytest.raises(StackStartError, match="cannot switch"):
            module.start(other)
        with pytest.raises(StackStartError, match="cannot switch"):
            module.plan(other)
