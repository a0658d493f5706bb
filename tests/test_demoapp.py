"""The demo services: their API (in process), and the real zero-code instrumentation's W3C links."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelgate.demoapp import create_app, membership_base_url
from otelgate.demoapp.launch import Instrumentation, auto_instrumentation_dir, service_argv
from otelgate.procs import ManagedProcess, free_port, port_is_open
from otelgate.waiting import poll_until

# --- the API, in process ---


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("membership:8080", "http://membership:8080"),
        ("127.0.0.1:9", "http://127.0.0.1:9"),
        ("http://membership.default.svc:8080/", "http://membership.default.svc:8080"),
        ("https://m.example", "https://m.example"),
    ],
)
def test_membership_host_accepts_host_port_and_url(value: str, expected: str) -> None:
    assert membership_base_url(value) == expected


@pytest.mark.parametrize("value", [None, "", "  "])
def test_membership_host_missing_is_a_clear_error(value: str | None) -> None:
    with pytest.raises(ValueError, match="MEMBERSHIP_SERVICE_HOST"):
        membership_base_url(value)


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown demo service 'cart'"):
        create_app("cart")


@pytest.mark.parametrize("service", ["membership", "inventory", "pricing"])
def test_every_service_has_a_health_endpoint(service: str) -> None:
    response = create_app(service).test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "service": service}


def test_inventory_and_pricing_api() -> None:
    inventory = create_app("inventory").test_client()
    products = inventory.get("/inventory").get_json()
    assert [p["id"] for p in products] == [0, 1, 2, 3]
    assert inventory.post("/buy").status_code == 400
    pricing = create_app("pricing").test_client()
    assert pricing.get("/price?id=1").get_json() == {"id": 1, "price": 4.5}
    assert pricing.get("/price").status_code == 400


def test_membership_answer_is_deterministic_per_user() -> None:
    client = create_app("membership").test_client()
    first = client.get("/isMember?userId=alice").get_json()
    assert first["userId"] == "alice" and isinstance(first["isMember"], bool)
    assert client.get("/isMember?userId=alice").get_json() == first


def test_coupon_answers_an_error_instead_of_hanging_when_membership_is_down(
        monkeypatch: pytest.MonkeyPatch) -> None:
    dead_port = free_port()  # nothing listens there
    monkeypatch.setenv("MEMBERSHIP_SERVICE_HOST", f"127.0.0.1:{dead_port}")
    client = create_app("coupon").test_client()
    started = time.monotonic()
    response = client.get("/coupons")
    assert response.status_code == 502
    assert "membership call failed" in response.get_json()["error"]
    assert time.monotonic() - started < 5.0
    assert client.post("/apply-coupon").status_code == 502


def test_coupon_times_out_on_a_membership_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("MEMBERSHIP_SERVICE_HOST", f"127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("MEMBERSHIP_TIMEOUT_S", "0.5")
        started = time.monotonic()
        response = create_app("coupon").test_client().get("/coupons")
        elapsed = time.monotonic() - started
    assert response.status_code == 502
    assert "Timeout" in response.get_json()["error"]
    assert 0.4 < elapsed < 3.0


def test_instrumentation_env_is_what_the_operator_injects() -> None:
    env = Instrumentation("http://127.0.0.1:4318").env(
        "coupon", base_env={"PATH": "/bin", "OTEL_SERVICE_NAME": "leaked", "PYTHONPATH": "/app"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(auto_instrumentation_dir()), "/app"]
    assert (auto_instrumentation_dir() / "sitecustomize.py").is_file()
    assert env["OTEL_SERVICE_NAME"] == "coupon"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert {env[f"OTEL_{s}_EXPORTER"] for s in ("TRACES", "METRICS", "LOGS")} == {"otlp"}
    assert env["OTEL_PROPAGATORS"] == "tracecontext,baggage"
    assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == ("parentbased_traceidratio", "1.0")
    assert "k8s.deployment.name=coupon" in env["OTEL_RESOURCE_ATTRIBUTES"].split(",")
    assert env["PATH"] == "/bin"


# --- the real instrumentation, in processes ---


class _OtlpTraceReceiver:
    """A minimal OTLP/HTTP protobuf receiver keeping spans with their service name (test-local)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.content_types: set[str] = set()
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.content_types.add(self.headers.get("Content-Type", ""))
                reply = b""
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    with lock:
                        for resource_spans in request.resource_spans:
                            service = next((a.value.string_value for a in resource_spans.resource.attributes
                                            if a.key == "service.name"), "")
                            for scope_spans in resource_spans.scope_spans:
                                outer.spans.extend((service, span) for span in scope_spans.spans)
                    reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_OtlpTraceReceiver]:
    rec = _OtlpTraceReceiver()
    yield rec
    rec.close()


def _start_instrumented(service: str, port: int, otlp: str, logs: Path, **extra_env: str) -> ManagedProcess:
    env = Instrumentation(otlp, extra_env=extra_env).env(service)
    proc = ManagedProcess(service, service_argv(service, port), logs / f"{service}.log", env=env).start()

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        proc.wait_ready(healthy, what=f"GET /healthz on :{port}", timeout=20)
    except BaseException:
        proc.stop()
        raise
    return proc


def test_coupon_to_membership_is_one_w3c_linked_trace(receiver: _OtlpTraceReceiver, tmp_path: Path) -> None:
    membership_port, coupon_port = free_port(), free_port()
    membership = _start_instrumented("membership", membership_port, receiver.url, tmp_path)
    try:
        coupon = _start_instrumented("coupon", coupon_port, receiver.url, tmp_path,
                                     MEMBERSHIP_SERVICE_HOST=f"127.0.0.1:{membership_port}")
    except BaseException:
        membership.stop()
        raise
    try:
        trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        response = httpx.get(f"http://127.0.0.1:{coupon_port}/coupons?userId=alice", timeout=5.0,
                             headers={"traceparent": f"00-{trace_id}-{caller_span}-01"})
        assert response.status_code == 200, response.text
        assert "coupons" in response.json()

        def in_trace() -> list[tuple[str, Span]]:
            return [(svc, s) for svc, s in receiver.spans if s.trace_id.hex() == trace_id]

        spans = poll_until(in_trace, lambda found: len(found) >= 3, what=f"3 spans of trace {trace_id}",
                           timeout=15)
    finally:
        coupon.stop()
        membership.stop()
    by_role = {(svc, s.kind): s for svc, s in spans}
    coupon_server = by_role[("coupon", Span.SPAN_KIND_SERVER)]
    coupon_client = by_role[("coupon", Span.SPAN_KIND_CLIENT)]
    membership_server = by_role[("membership", Span.SPAN_KIND_SERVER)]
    assert coupon_server.parent_span_id.hex() == caller_span  # incoming traceparent honoured
    assert coupon_client.parent_span_id == coupon_server.span_id
    assert membership_server.parent_span_id == coupon_client.span_id  # the W3C hop between processes
    assert coupon_server.name == "GET /coupons"
    assert membership_server.name == "GET /isMember"
    assert receiver.content_types == {"application/x-protobuf"}  # http/protobuf, as the Operator sets


def test_services_stop_cleanly_and_release_their_ports(receiver: _OtlpTraceReceiver, tmp_path: Path) -> None:
    port = free_port()
    proc = _start_instrumented("pricing", port, receiver.url, tmp_path)
    assert httpx.get(f"http://127.0.0.1:{port}/price?id=2", timeout=5.0).json()["price"] == 39.0
    proc.stop()
    assert not proc.alive()
    assert not port_is_open("127.0.0.1", port)
    # SIGTERM is a normal exit, so the last batch is flushed rather than lost
    poll_until(lambda: [s.name for svc, s in receiver.spans if svc == "pricing"],
               lambda names: "GET /price" in names, what="pricing's span flushed at shutdown", timeout=5)


def test_instrumentation_env_comes_from_the_cluster_manifest(tmp_path: Path) -> None:
    env = Instrumentation.from_manifest("http://127.0.0.1:4318").env("membership", base_env={})
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"  # the one rewritten value
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    changed = tmp_path / "instrumentation.yaml"
    changed.write_text(
        "apiVersion: opentelemetry.io/v1alpha1\nkind: Instrumentation\nmetadata: {name: x}\n"
        "spec:\n  propagators: [tracecontext]\n  sampler: {type: parentbased_traceidratio, argument: '0.25'}\n"
        "  python:\n    env:\n      - {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: http://in-cluster:4318}\n"
        "      - {name: OTEL_PYTHON_LOG_CORRELATION, value: 'true'}\n")
    env = Instrumentation.from_manifest("http://127.0.0.1:1", changed).env("coupon", base_env={})
    assert env["OTEL_PROPAGATORS"] == "tracecontext"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert env["OTEL_PYTHON_LOG_CORRELATION"] == "true"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:1"
    (tmp_path / "other.yaml").write_text("kind: Deployment\n")
    with pytest.raises(ValueError, match="not an Instrumentation"):
        Instrumentation.from_manifest("http://x", tmp_path / "other.yaml")
