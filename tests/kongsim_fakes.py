"""Small real servers for the Kong simulator's tests: an upstream that echoes what it received, an OTLP/HTTP traces
receiver that decodes ExportTraceServiceRequest with opentelemetry-proto, and a TCP line receiver. All bind
127.0.0.1 on free ports and run on daemon threads."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelgate import kongconfig
from otelgate.kongsim import Listeners, Simulator, SimulatorThread
from otelgate.procs import free_port


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Upstream:
    """``GET /anything`` -> 200 JSON echo; ``/status/<code>`` -> that code; ``/slow/<seconds>`` sleeps first."""

    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        upstream = self

        class Handler(_QuietHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.requests.append(SeenRequest(self.command, self.path,
                                                     {k.lower(): v for k, v in self.headers.items()}, body))
                status = 200
                if self.path.startswith("/status/"):
                    status = int(self.path.split("/")[2])
                if self.path.startswith("/slow/"):
                    time.sleep(float(self.path.split("/")[2]))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out first
                    self._reply(status, json.dumps({"path": self.path, "ok": True}).encode())

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class OtlpPost:
    headers: dict[str, str]
    request: ExportTraceServiceRequest


class OtlpReceiver:
    """POST /v1/traces. ``statuses`` is a queue of HTTP statuses to answer with before answering 200."""

    def __init__(self) -> None:
        self.posts: list[OtlpPost] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    receiver.posts.append(OtlpPost({k.lower(): v for k, v in self.headers.items()}, request))
                self._reply(status, b"", "application/x-protobuf")

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def spans(self) -> list[Any]:
        return [span for post in self.posts for rs in post.request.resource_spans for ss in rs.scope_spans
                for span in ss.spans]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LineReceiver:
    """A TCP server collecting newline-terminated lines; counts connections."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.connections = 0
        self.open_sockets: list[socket.socket] = []
        self.host, self.port = "127.0.0.1", free_port()
        self._serve()

    def _serve(self) -> None:
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                receiver.connections += 1
                receiver.open_sockets.append(self.connection)
                with contextlib.suppress(OSError):
                    for raw in self.rfile:
                        receiver.lines.append(raw.decode("utf-8").rstrip("\n"))

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server((self.host, self.port), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def drop_connections_and_restart(self) -> None:
        """Close every open connection and listen again on the same port (like a collector restart)."""
        self.server.shutdown()
        self.server.server_close()
        for sock in self.open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.open_sockets.clear()
        self._serve()

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    upstream: Upstream
    otlp: OtlpReceiver
    lines: LineReceiver
    sim: SimulatorThread
    doc: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def proxy(self) -> str:
        return self.sim.listeners.proxy_url

    @property
    def status(self) -> str:
        return self.sim.listeners.status_url

    @property
    def admin(self) -> str:
        return self.sim.listeners.admin_url


def derived_doc(upstream: Upstream, otlp: OtlpReceiver, lines: LineReceiver,
                overrides: dict[str, dict[str, Any]] | None = None, path: Path = kongconfig.DEFAULT_PATH,
                upstream_host: str = "localhost") -> dict[str, Any]:
    """The cluster's kong.yaml pointed at the fakes. Upstreams are a hostname by default (as on the cluster and
    the local stack, so Kong resolves them: kong.dns); ``upstream_host="127.0.0.1"`` gives an IP literal."""
    doc = kongconfig.load(path)
    port = upstream.server.server_address[1]
    return kongconfig.derive_kong_config(
        doc, upstreams={name: f"http://{upstream_host}:{port}" for name in ("coupon", "inventory", "pricing")},
        otlp_traces_endpoint=otlp.endpoint, tcp_log_host=lines.host, tcp_log_port=lines.port,
        plugin_overrides=overrides)


# a short coalescing delay keeps the tests fast; the default (1 s) has its own test
FAST_QUEUE = {"opentelemetry": {"queue.max_coalescing_delay": 0.05}}


@contextmanager
def running_stack(overrides: dict[str, dict[str, Any]] | None = None, *, sampling_rate: float = 1.0,
                  instrumentations: str = "all", node_id: str | None = None, upstream_host: str = "localhost"
                  ) -> Iterator[Stack]:
    upstream, otlp, lines = Upstream(), OtlpReceiver(), LineReceiver()
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in FAST_QUEUE.items()}
    for plugin, values in (overrides or {}).items():
        merged.setdefault(plugin, {}).update(values)
    doc = derived_doc(upstream, otlp, lines, merged, upstream_host=upstream_host)
    listeners = Listeners("127.0.0.1", free_port(), free_port(), free_port())
    sim = SimulatorThread(Simulator(doc, listeners, tracing_sampling_rate=sampling_rate,
                                    tracing_instrumentations=instrumentations, node_id=node_id))
    try:
        sim.start()
        try:
            yield Stack(upstream, otlp, lines, sim, doc)
        finally:
            sim.stop()
    finally:
        for server in (upstream, otlp, lines):
            server.close()
