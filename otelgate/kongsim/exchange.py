"""One request as the Kong simulator (a TEST DOUBLE of Kong 3.9, not Kong) sees it: ``ngx.ctx``/``ngx.var`` of a
request, its balancer tries, and ``kong.log.serialize()`` over them (docs/reference/kong-3.9.md#serializer-fields).

``#anchor`` in comments names a section of docs/reference/kong-3.9.md (Kong 3.9.1's facts, with sources).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from otelgate import kongconfig
from otelgate.kongsim import tcplog
from otelgate.kongsim.node import Runtime
from otelgate.kongsim.propagation import UpstreamHeaders
from otelgate.kongsim.tracing import RequestTracing


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Try:
    balancer_start_ns: int
    ip: str
    port: int
    balancer_latency_ns: int = 0
    connect_ns: int = 0
    state: str | None = None
    code: int | None = None

    def as_log(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "balancer_start": self.balancer_start_ns // 1_000_000, "balancer_start_ns": self.balancer_start_ns,
            "ip": self.ip, "port": self.port, "balancer_latency": self.balancer_latency_ns // 1_000_000,
            "balancer_latency_ns": self.balancer_latency_ns,
        }
        if self.state:
            entry["state"], entry["code"] = self.state, self.code
        return entry


@dataclass
class Exchange:
    """``ngx.ctx`` / ``ngx.var`` of one request."""

    runtime: Runtime
    start_ns: int
    request_id: str
    method: str
    request_uri: str  # path + "?" + query as received
    path: str
    query: str
    scheme: str
    host: str  # $host: Host header without port
    server_port: int
    client_ip: str
    http_version: str
    incoming: list[tuple[str, str]]
    body: bytes
    tracing: RequestTracing
    headers: UpstreamHeaders  # the request headers as Kong changes them (what the log shows)
    serialize_values: list[tuple[str, Any]] = field(default_factory=list)
    route: kongconfig.Route | None = None
    service: kongconfig.Service | None = None
    upstream_uri: str = ""
    tries: list[Try] = field(default_factory=list)
    upstream_statuses: list[str] = field(default_factory=list)
    status: int = 0
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_source: str = "exit"  # kong.response.get_source(): service | error | exit
    bytes_sent: int = 0
    kong_latency_ms: int | None = None
    waiting_ms: int | None = None
    receive_ms: int = 0
    body_filter_end_ns: int = 0
    access_ran: bool = False

    def header(self, name: str) -> str | None:
        return self.headers.lower_items().get(name.lower().replace("_", "-"))


# --------------------------------------------------------------------------------------------------------------
# the serializer (#serializer-fields)

def serialize(ex: Exchange) -> dict[str, Any]:
    """``kong.log.serialize()`` for this request, with the request's ``set_serialize_value`` entries applied."""
    request_headers: dict[str, Any] = {}
    for name, value in ex.headers.lower_items().items():
        request_headers[name] = "REDACTED" if name in ("authorization", "proxy-authorization") else value
    response_headers: dict[str, Any] = {}
    for name, value in ex.response_headers:
        key = name.lower()
        existing = response_headers.get(key)
        response_headers[key] = value if existing is None else ([*existing, value] if isinstance(existing, list)
                                                                else [existing, value])
    total_ms = (ex.body_filter_end_ns - ex.start_ns) / 1e6
    root: dict[str, Any] = {
        "request": {
            "id": ex.request_id,
            "uri": ex.request_uri,
            "url": f"{ex.scheme}://{ex.host}:{ex.server_port}{ex.request_uri}",  # with port (#serializer-fields)
            "querystring": _querystring(ex.query),
            "method": ex.method,
            "headers": request_headers,
            "size": request_size(ex),
        },
        "upstream_uri": ex.upstream_uri,
        "upstream_status": ", ".join(ex.upstream_statuses),
        "response": {"status": ex.status, "headers": response_headers, "size": ex.bytes_sent},
        "latencies": {
            "kong": ex.kong_latency_ms if ex.kong_latency_ms is not None else int(total_ms),
            "proxy": ex.waiting_ms if ex.waiting_ms is not None else -1,
            "request": int(total_ms),  # $request_time has millisecond resolution
            "receive": ex.receive_ms,
        },
        # ctx.balancer_data.tries: absent without a matched route, else an array (cjson: [] when empty)
        "tries": tcplog.LuaArray(t.as_log() for t in ex.tries) if ex.route else None,
        "route": _entity(ex.route.entity) if ex.route else None,
        "service": _entity(ex.service.entity) if ex.service else None,
        "client_ip": ex.client_ip,
        "started_at": ex.start_ns // 1_000_000,
        "source": "upstream" if ex.response_source == "service" else "kong",
        "workspace": kongconfig.DEFAULT_WORKSPACE_ID,
        "workspace_name": "default",
    }
    root = {k: v for k, v in root.items() if v is not None}
    return tcplog.apply_serialize_values(root, copy.deepcopy(ex.serialize_values))


def _entity(entity: Any) -> dict[str, Any]:
    return json.loads(json.dumps(entity))  # a deep, plain copy


def _querystring(query: str) -> dict[str, Any]:
    """``kong.request.get_query()``: ``a=1&b`` -> {"a": "1", "b": true}; repeated keys become arrays."""
    out: dict[str, Any] = {}
    for part in query.split("&") if query else []:
        if not part:
            continue
        key, sep, value = part.partition("=")
        item: Any = unquote_plus(value) if sep else True
        key = unquote_plus(key)
        if key in out:
            out[key] = [*out[key], item] if isinstance(out[key], list) else [out[key], item]
        else:
            out[key] = item
    return out


def request_size(ex: Exchange) -> int:
    """``$request_length``: request line, headers and body as received."""
    line = len(f"{ex.method} {ex.request_uri} HTTP/{ex.http_version}\r\n")
    headers = sum(len(k) + len(v) + 4 for k, v in ex.incoming)
    return line + headers + 2 + len(ex.body)


def response_size(status: int, headers: list[tuple[str, str]], body: bytes) -> int:
    """``$bytes_sent``: status line, headers and body."""
    return len(f"HTTP/1.1 {status} \r\n") + sum(len(k) + len(v) + 4 for k, v in headers) + 2 + len(body)
