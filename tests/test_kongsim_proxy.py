"""The Kong simulator's proxy, Admin API and CLI (a test double of Kong 3.9): routing with strip_path, Kong's headers,
404/502/504 behaviour, client timeouts, config reload, and the process entry point."""

from __future__ import annotations

import copy
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kongsim_fakes import running_stack

from otelgate import kongconfig
from otelgate.kongsim import Listeners, Simulator, SimulatorThread
from otelgate.procs import ManagedProcess, free_port
from otelgate.waiting import poll_until


@pytest.mark.parametrize(("path", "upstream_path"), [
    ("/coupon/coupons", "/coupons"),                # strip_path true
    ("/coupon", "/"),
    ("/inventory/items?sku=7", "/inventory/items?sku=7"),  # strip_path false
    ("/pricing/price?id=1", "/price?id=1"),
])
def test_routes_and_strip_path(path: str, upstream_path: str) -> None:
    with running_stack() as st:
        response = httpx.get(st.proxy + path, timeout=5)
        seen = st.upstream.requests[-1]
    assert response.status_code == 200
    assert seen.path == upstream_path


def test_kong_headers_on_response_and_upstream() -> None:
    with running_stack() as st:
        response = httpx.post(f"{st.proxy}/coupon/apply-coupon", content=b'{"code":"X"}',
                              headers={"content-type": "application/json"}, timeout=5)
        seen = st.upstream.requests[-1]
        upstream_port = st.upstream.url.rsplit(":", 1)[1]
    request_id = response.headers["x-kong-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert seen.headers["x-kong-request-id"] == request_id
    assert response.headers["via"] == "1.1 kong/3.9.1"
    assert "x-kong-upstream-latency" in response.headers and "x-kong-proxy-latency" in response.headers
    assert seen.method == "POST" and seen.body == b'{"code":"X"}'
    assert seen.headers["host"] == f"localhost:{upstream_port}"  # preserve_host false: the service's host
    assert seen.headers["x-forwarded-for"] == "127.0.0.1" and seen.headers["x-forwarded-prefix"] == "/coupon"


def test_upstream_sees_only_the_clients_headers_plus_kongs() -> None:
    with running_stack() as st, socket.create_connection(("127.0.0.1", st.sim.listeners.proxy_port), 5) as sock:
        sock.sendall(b"GET /pricing/p HTTP/1.1\r\nHost: shop.example:8000\r\nX-Custom: 1\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        headers = poll_until(lambda: st.upstream.requests, bool, what="the upstream request", timeout=5)[-1].headers
    assert set(headers) == {"host", "x-custom", "traceparent", "x-forwarded-for", "x-forwarded-proto",
                            "x-forwarded-host", "x-forwarded-port", "x-forwarded-path", "x-forwarded-prefix",
                            "x-real-ip", "x-kong-request-id", "via"}
    assert headers["via"] == "1.1 kong/3.9.1"
    assert headers["x-forwarded-host"] == "shop.example"


def test_no_route_is_kongs_404() -> None:
    with running_stack() as st:
        response = httpx.get(f"{st.proxy}/unknown", timeout=5)
        assert st.upstream.requests == []
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == {"message": "no Route matched with those values",
                               "request_id": response.headers["x-kong-request-id"]}
    assert response.headers["server"] == "kong/3.9.1"


def _closed_port() -> int:
    return free_port()  # nothing listens there


def test_upstream_connection_refused_is_502_after_kongs_retries() -> None:
    with running_stack() as st:
        doc = copy.deepcopy(st.doc)
        doc["services"][0]["url"] = f"http://127.0.0.1:{_closed_port()}"
        st.sim.call(st.sim.node.load(doc, "test"))
        response = httpx.get(f"{st.proxy}/coupon/coupons", timeout=10)
        spans = poll_until(lambda: [s for s in st.otlp.spans() if s.name == "kong.balancer"],
                           lambda spans: len(spans) >= 6, what="6 balancer spans", timeout=5, interval=0.05)
        line = poll_until(st.lines.json_lines, bool, what="the tcp-log line", timeout=5, interval=0.05)[0]
    assert response.status_code == 502
    assert response.json()["message"] == "An invalid response was received from the upstream server"
    # retries = 5 (service default): 6 tries, each a failed kong.balancer span with status ERROR
    assert sorted(span.attributes[0].value.double_value for span in spans) == [1, 2, 3, 4, 5, 6]
    assert all(span.status.code == 2 for span in spans)
    assert len(line["tries"]) == 6 and all(t["state"] == "failed" and t["code"] == 502 for t in line["tries"])
    assert line["upstream_status"] == ", ".join(["502"] * 6)
    assert line["source"] == "kong"


def test_read_timeout_from_the_service_is_504() -> None:
    with running_stack() as st:
        doc = copy.deepcopy(st.doc)
        doc["services"][0].update(read_timeout=200, retries=0)
        st.sim.call(st.sim.node.load(doc, "test"))
        started = time.monotonic()
        response = httpx.get(f"{st.proxy}/coupon/slow/2", timeout=10)
        elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["message"] == "The upstream server is timing out"
    assert elapsed < 1.5, f"the 200 ms read_timeout was not applied ({elapsed:.2f}s)"


def test_admin_post_config_reloads_after_validation() -> None:
    with running_stack() as st:
        httpx.get(f"{st.proxy}/coupon/a", timeout=5)
        changed = copy.deepcopy(st.doc)
        next(p for p in changed["plugins"] if p["name"] == "prometheus")["config"]["status_code_metrics"] = False
        changed["services"][2]["routes"][0]["paths"] = ["/prices"]
        accepted = httpx.post(f"{st.admin}/config", content=yaml.safe_dump(changed),
                              headers={"content-type": "text/yaml"}, timeout=5)
        assert accepted.status_code == 201, accepted.text
        moved = httpx.get(f"{st.proxy}/prices/x", timeout=5)
        old_path = httpx.get(f"{st.proxy}/pricing/x", timeout=5)
        # an invalid config is refused and the running one stays
        broken = copy.deepcopy(changed)
        broken["plugins"].append({"name": "acl", "config": {"allow": ["x"]}})
        refused = httpx.post(f"{st.admin}/config", json=broken, timeout=5)
        still = httpx.get(f"{st.proxy}/prices/x", timeout=5)
        metrics = httpx.get(f"{st.status}/metrics", timeout=5).text
        status_hash = httpx.get(f"{st.admin}/status", timeout=5).json()["configuration_hash"]
    assert (moved.status_code, old_path.status_code, still.status_code) == (200, 404, 200)
    assert refused.status_code == 400 and "plugin 'acl' is not implemented" in refused.text
    assert status_hash == accepted.json()["configuration_hash"] == kongconfig.config_hash(changed)
    # counters survive the reload (shared dict); status_code_metrics off after it: no new series for pricing
    assert 'kong_http_requests_total{service="coupon",route="coupon-route",code="200"' in metrics
    pricing_requests = [line for line in metrics.splitlines()
                        if line.startswith("kong_http_requests_total") and 'service="pricing"' in line]
    assert pricing_requests == []
    assert 'kong_bandwidth_bytes{service="pricing",route="pricing-route",direction="egress"' in metrics


def test_bad_config_fails_start_loudly() -> None:
    doc: dict[str, Any] = kongconfig.load()
    doc["plugins"].append({"name": "cors"})
    listeners = Listeners("127.0.0.1", free_port(), free_port(), free_port())
    with pytest.raises(kongconfig.KongConfigError, match="plugin 'cors' is not implemented"):
        SimulatorThread(Simulator(doc, listeners)).start()


def test_cli_process_runs_and_says_it_is_a_test_double(tmp_path: Path) -> None:
    help_text = ManagedProcess("help", [sys.executable, "-m", "otelgate.kongsim", "--help"], tmp_path / "help.log")
    help_text.start()
    assert help_text.popen is not None and help_text.popen.wait(timeout=30) == 0
    assert "TEST DOUBLE" in (tmp_path / "help.log").read_text()

    ports = [free_port() for _ in range(3)]
    argv = [sys.executable, "-m", "otelgate", "kongsim", "--config", str(kongconfig.DEFAULT_PATH),
            "--proxy-port", str(ports[0]), "--status-port", str(ports[1]), "--admin-port", str(ports[2]),
            "--tracing-sampling-rate", "1.0", "--tracing-instrumentations", "all"]
    with ManagedProcess("kongsim", argv, tmp_path / "kongsim.log") as proc:
        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{ports[1]}/status/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        proc.wait_ready(ready, what="/status/ready", timeout=30)
        response = httpx.get(f"http://127.0.0.1:{ports[0]}/nowhere", timeout=5)
        assert response.status_code == 404
    log = (tmp_path / "kongsim.log").read_text()
    assert "TEST DOUBLE" in log
    assert proc.popen is not None and proc.popen.returncode is not None


def test_cli_refuses_an_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "kong.yaml"
    bad.write_text("_format_version: '3.0'\nplugins:\n  - name: bot-detection\n")
    proc = ManagedProcess("bad", [sys.executable, "-m", "otelgate.kongsim", "--config", str(bad), "--proxy-port", "1",
                                  "--status-port", "2", "--admin-port", "3"], tmp_path / "bad.log").start()
    assert proc.popen is not None and proc.popen.wait(timeout=30) == 2
    assert "plugin 'bot-detection' is not implemented" in (tmp_path / "bad.log").read_text()
