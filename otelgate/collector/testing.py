"""Test helpers: the collector binary (or a skip/failure that says why), a collector run against a sink, and the
collector's log attached to a failing test."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from otelgate.collector.build import CollectorNotFound, find_collector
from otelgate.collector.config import (
    CollectorPorts,
    derive_local_config,
    load_collector_resource,
    local_env,
)
from otelgate.collector.process import CollectorProcess
from otelgate.procs import free_port


def collector_required() -> bool:
    """In CI (or with OTELGATE_REQUIRE_COLLECTOR=1) a missing collector fails a test instead of skipping it."""
    return bool(os.environ.get("CI")) or os.environ.get("OTELGATE_REQUIRE_COLLECTOR") == "1"


def collector_binary_or_skip() -> Path:
    try:
        return find_collector()
    except CollectorNotFound as exc:
        if collector_required():
            pytest.fail(f"the collector is required here (CI / OTELGATE_REQUIRE_COLLECTOR=1): {exc}", pytrace=False)
        pytest.skip(f"no collector binary (set OTELGATE_REQUIRE_COLLECTOR=1 to make this a failure): {exc}")


@dataclass
class RunningCollector:
    process: CollectorProcess
    ports: CollectorPorts
    config: dict[str, Any]
    env: dict[str, str]

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.otlp_http}"


@contextlib.contextmanager
def running_collector(binary: Path, workdir: Path, *, sink_endpoint: str, token: str,
                      kong_status_target: str = "127.0.0.1:9", deployment_name: str | None = None,
                      drop_processors: Iterable[str] = (), exporter_token: str | None = None,
                      request: pytest.FixtureRequest | None = None) -> Iterator[RunningCollector]:
    """The resource's config, derived for 127.0.0.1, running until the block ends (its log attached on failure)."""
    resource = load_collector_resource()
    ports = CollectorPorts.allocate()
    config = derive_local_config(resource["spec"]["config"], ports=ports, sink_endpoint=sink_endpoint,
                                 kong_status_target=kong_status_target, drop_processors=drop_processors,
                                 exporter_token=exporter_token)
    overrides = {"KONG_DEPLOYMENT_NAME": deployment_name} if deployment_name else {}
    env = local_env(resource, token, **overrides)
    process = CollectorProcess(binary, config, workdir, env=env)
    with attach_log_on_failure(process, request):
        process.start()
        try:
            process.wait_healthy(timeout=30.0)
            yield RunningCollector(process, ports, config, env)
        finally:
            process.stop()


@contextlib.contextmanager
def attach_log_on_failure(process: CollectorProcess, request: pytest.FixtureRequest | None) -> Iterator[None]:
    """On an exception, the collector's log becomes a section of the test report (and its tail joins the error)."""
    try:
        yield
    except BaseException as exc:
        log = process.log_text()
        if request is not None:
            request.node.add_report_section("call", f"collector log ({process.log_path})", log)
        if isinstance(exc, AssertionError):
            exc.args = (f"{exc.args[0] if exc.args else ''}\n--- collector log tail ({process.log_path}) ---\n"
                        + "\n".join(log.splitlines()[-40:]),)
        raise


@contextlib.contextmanager
def serve_exposition(render: Callable[[], str]) -> Iterator[str]:
    """Serve ``render()`` as a Prometheus text exposition at ``GET /metrics`` on 127.0.0.1 (what Kong's Status API
    answers, with its content type) for the collector's prometheus receiver to scrape; yields ``host:port``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


# Kong 3.9.1's default kong_request_latency_ms buckets (Kong/kong@3.9.1 kong/plugins/prometheus/exporter.lua:24)
KONG_LATENCY_BOUNDS_MS = (25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000)


def kong_latency_histogram(labels: str, latencies: Sequence[float],
                           bounds: Iterable[int] = KONG_LATENCY_BOUNDS_MS) -> list[str]:
    """Kong's exposition lines of kong_request_latency_ms for one label set (``labels`` without braces): a bucket
    line only for the bounds some request fell into (a bucket no request reached has no key in Kong's shared dict),
    then +Inf, count and sum."""
    lines: list[str] = []
    for le in bounds:
        count = sum(1 for v in latencies if v <= le)
        if count:
            lines.append(f'kong_request_latency_ms_bucket{{{labels},le="{le}"}} {count}')
    return [*lines, f'kong_request_latency_ms_bucket{{{labels},le="+Inf"}} {len(latencies)}',
            f"kong_request_latency_ms_count{{{labels}}} {len(latencies)}",
            f"kong_request_latency_ms_sum{{{labels}}} {sum(latencies):g}"]
