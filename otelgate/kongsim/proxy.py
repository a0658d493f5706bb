"""The Kong simulator's proxy listener (a TEST DOUBLE of Kong 3.9, for the local stack only; not Kong).

A plain ASGI app that walks one request through Kong's phases as docs/reference/kong-3.9.md describes them:
rewrite (root ``kong`` span, #root-span-attributes) -> access (``kong.router``; pre-created balancer span;
plugins by priority: opentelemetry 14 propagates, #propagation) -> balancer (``kong.dns``, upstream tries with the
service's timeouts and ``retries``) -> header_filter (root status/route attributes,
``kong.header_filter.plugin.opentelemetry``) -> response -> log, scheduled off the request path (opentelemetry 14,
prometheus 13, tcp-log 7).

``#anchor`` in comments names a section of docs/reference/kong-3.9.md (Kong 3.9.1's facts, with sources).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from otelgate.kongsim import tcplog
from otelgate.kongsim.exchange import Exchange, Try, response_size, serialize
from otelgate.kongsim.node import Node, Runtime
from otelgate.kongsim.propagation import UpstreamHeaders, propagate
from otelgate.kongsim.routing import match_route, matched_prefix
from otelgate.kongsim.tracing import (
    KONG_VERSION,
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    RequestTracing,
    encode_span,
    sample_trace_id,
)

log = logging.getLogger("otelgate.kongsim.proxy")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "proxy"}
IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"}
VIA = f"1.1 kong/{KONG_VERSION}"
SERVER = f"kong/{KONG_VERSION}"
# kong/tools/http.lua JSON error template and kong/pdk/response.lua messages
ERROR_TEMPLATE = '{\n  "message":"%s",\n  "request_id":"%s"\n}'
NO_ROUTE = "no Route matched with those values"
MSG_502 = "An invalid response was received from the upstream server"
MSG_503_DNS = "name resolution failed"
# the legacy resolver's errors that balancer.execute answers with 503 (kong/runloop/balancer/init.lua:382-384)
DNS_NOT_FOUND = ("dns server error: 3 name error", "dns client error: 101 empty record received")
MSG_504 = "The upstream server is timing out"


def hostname_type(host: str) -> str:
    """``kong.tools.ip.hostname_type``: ``ipv4``, ``ipv6`` or ``name``."""
    try:
        return "ipv4" if ipaddress.ip_address(host.strip("[]")).version == 4 else "ipv6"
    except ValueError:
        return "name"


def resolver_error(exc: BaseException) -> str:
    """The legacy DNS client's message for a failed lookup, from the OS resolver's answer."""
    if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME:
        return DNS_NOT_FOUND[0]
    if isinstance(exc, socket.gaierror) and exc.errno == getattr(socket, "EAI_NODATA", -5):
        return DNS_NOT_FOUND[1]
    log.error("resolver answered: %s: %s", type(exc).__name__, exc)
    if isinstance(exc, TimeoutError):
        return "dns client error: timeout"
    return "dns server error: 2 server failure"  # resty.dns's text for any other failure (rcode 2)


class ProxyApp:
    """ASGI app of the proxy listener."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.node.counters.total_requests += 1
        self.node.counters.active += 1
        try:
            await self._handle(scope, receive, send)
        finally:
            self.node.counters.active -= 1

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        start_ns = time.time_ns()
        runtime = self.node.runtime
        body = await _read_body(receive)
        if runtime is None:
            await _send(send, 503, [("content-type", "application/json; charset=utf-8")],
                        b'{"message":"no configuration available (empty configuration present)"}')
            return
        ex = self._exchange(scope, runtime, body, start_ns)
        self._rewrite(ex)
        self._route(ex)
        if ex.route is None:
            response_body = self._kong_error_body(ex, 404, NO_ROUTE, "exit")
        else:
            self._access_plugins(ex)
            ex.kong_latency_ms = (time.time_ns() - start_ns) // 1_000_000
            response_body = await self._balancer_and_proxy(ex)
        self._header_filter(ex)
        await self._respond(ex, send, response_body)
        self._schedule_log(ex)

    # ----------------------------------------------------------------------------------------------- phases

    def _exchange(self, scope: Scope, runtime: Runtime, body: bytes, start_ns: int) -> Exchange:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        host_header = next((v for k, v in headers if k.lower() == "host"), "")
        host = host_header.rsplit(":", 1)[0] if host_header and not host_header.endswith("]") else host_header
        server = scope.get("server") or ("127.0.0.1", 0)
        client = scope.get("client") or ("127.0.0.1", 0)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"").decode("latin-1")
        request_uri = raw_path.decode("latin-1") + (f"?{query}" if query else "")
        tracing = RequestTracing(self.node.instrumentations)
        return Exchange(runtime=runtime, start_ns=start_ns, request_id=uuid.uuid4().hex, method=scope["method"],
                        request_uri=request_uri, path=raw_path.decode("latin-1"), query=query,
                        scheme=scope.get("scheme", "http"), host=(host or server[0]).lower(),
                        server_port=int(server[1] or 0), client_ip=client[0], http_version=scope["http_version"],
                        incoming=headers, body=body, tracing=tracing, headers=UpstreamHeaders(headers))

    def _rewrite(self, ex: Exchange) -> None:
        """The root span; it gets the global sampler's decision first.

        Kong creates it whenever tracing is not ``off``, whatever the list: ``request`` is defined after
        ``available_types`` is collected, so no list turns it off (Kong/kong@3.9.1
        kong/observability/tracing/instrumentation.lua:215-225,409-428). Its start is ``KONG_PROCESSING_START``
        (milliseconds) times 1e6 (instrumentation.lua:234-236)."""
        if not ex.tracing.instrumentations:
            return
        start_ns = ex.start_ns // 1_000_000 * 1_000_000
        root = ex.tracing.start_span("kong", SPAN_KIND_SERVER, start_ns=start_ns, attributes={
            "http.method": ex.method,
            "http.url": f"{ex.scheme}://{ex.host}{ex.request_uri}",  # no port (#root-span-attributes)
            "http.host": ex.host,
            "http.scheme": ex.scheme,
            "http.flavor": ex.http_version,
            "http.client_ip": ex.client_ip,  # get_forwarded_ip(): no trusted_ips, so the client address
            "net.peer.ip": ex.client_ip,
            "kong.request.id": ex.request_id,
        })
        ex.tracing.raw_trace_id = root.trace_id
        ex.tracing.should_sample = sample_trace_id(root.trace_id, self.node.tracing_sampling_rate)

    def _route(self, ex: Exchange) -> None:
        tracing = ex.tracing
        span = tracing.start_span("kong.router") if tracing.enabled("router") else None
        if tracing.enabled("balancer") and tracing.root is not None:
            # pre-created so its id can be propagated upstream (#span-hierarchy-and-timing, #propagation)
            tracing.unlinked_balancer = tracing.create_span("", SPAN_KIND_CLIENT, parent=tracing.root)
        match = match_route(ex.runtime.config, ex.path)
        if span is not None:
            if match is None:
                span.status = STATUS_ERROR
            tracing.finish(span)
        if match is None:
            return
        ex.service, ex.route, ex.upstream_uri = match
        if ex.query:
            ex.upstream_uri += f"?{ex.query}"

    def _access_plugins(self, ex: Exchange) -> None:
        plugin = ex.runtime.otel
        if plugin is None:
            return
        tracing = ex.tracing
        span = tracing.start_span("kong.access.plugin.opentelemetry") if tracing.enabled("plugin_access") else None
        formats = propagate(plugin.config, ex.headers, tracing, self.node.tracing_sampling_rate)
        if formats:
            ex.serialize_values.append(("trace_id", dict(formats)))  # set in access (#serialized-trace-id)
        ex.access_ran = True
        if span is not None:
            tracing.finish(span)

    async def _resolve(self, ex: Exchange, host: str, port: int) -> tuple[str | None, str]:
        """``balancer.execute``: an IP literal is used as is, without a lookup or a ``kong.dns`` span
        (Kong/kong@3.9.1 kong/runloop/balancer/init.lua:290-296); a name goes through the (wrapped) resolver, one
        ``kong.dns`` span per call (instrumentation.lua:286-309). Returns the address or None and the error."""
        if hostname_type(host) != "name":
            return host, ""
        tracing = ex.tracing
        span = tracing.start_span("kong.dns", SPAN_KIND_CLIENT) if tracing.enabled("dns_query") else None
        ip: str | None = None
        error = ""
        assert ex.service is not None
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, family=socket.AF_INET),
                ex.service.connect_timeout_ms / 1000)
            ip = str(infos[0][4][0])
        except (OSError, TimeoutError) as exc:
            error = resolver_error(exc)
        if span is not None:
            span.attributes["dns.record.domain"] = host
            # a Lua number: a double (#resource-scope-and-attribute-types)
            span.attributes["dns.record.port"] = float(port)
            if ip:
                span.attributes["dns.record.ip"] = ip
            else:
                span.events.append(("exception", time.time_ns(), {"exception.message": error}))
                span.status = STATUS_ERROR
            tracing.finish(span)
        if ip is None:
            log.error("DNS resolution failed: %s. Tried: %s", error, host)
        return ip, error

    async def _balancer_and_proxy(self, ex: Exchange) -> bytes:
        service = ex.service
        assert service is not None
        ex.tries = []  # balancer_prepare: an empty `tries` array from here on (handler.lua:833)
        ip, error = await self._resolve(ex, service.host, service.port)
        if ip is None:
            # kong.response.error: source "exit"; NXDOMAIN / empty record -> 503, any other resolver error -> 500
            # with the resolver's message (balancer/init.lua:380-390, runloop/handler.lua:857-865,1423-1425)
            if error in DNS_NOT_FOUND:
                return self._kong_error_body(ex, 503, MSG_503_DNS, "exit")
            return self._kong_error_body(
                ex, 500, f"failed the initial dns/balancer resolve for '{service.host}' with: {error}", "exit")
        headers = self._upstream_headers(ex)
        timeout = httpx.Timeout(connect=service.connect_timeout_ms / 1000, read=service.read_timeout_ms / 1000,
                                write=service.write_timeout_ms / 1000, pool=service.connect_timeout_ms / 1000)
        target_host = ip if service.protocol == "http" else service.host
        url = f"{service.protocol}://{_bracket(target_host)}:{service.port}{ex.upstream_uri}"
        max_tries = service.retries + 1
        for attempt in range(1, max_tries + 1):
            # a retry resolves again from the DNS cache in the balancer phase, which is not a tracing phase: no
            # kong.dns span (Kong/kong@3.9.1 kong/pdk/tracing.lua:436-444,509-515); the simulator keeps the address
            attempt_try = Try(balancer_start_ns=time.time_ns(), ip=ip, port=service.port)
            ex.tries.append(attempt_try)
            sent_ns = time.time_ns()
            try:
                # a bare Request: the client's default headers (User-Agent, Accept-Encoding, ...) must not leak in
                request = httpx.Request(ex.method, url, headers=headers, content=ex.body or None,
                                        extensions={"timeout": timeout.as_dict()})
                response = await self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                code = 504 if isinstance(exc, httpx.ConnectTimeout) else 502
                if self._failed_try(ex, attempt_try, code, exc, retry=attempt < max_tries):
                    continue
                return self._upstream_failure(ex, code)
            except httpx.TransportError as exc:  # read/write timeouts, resets, protocol errors
                code = 504 if isinstance(exc, httpx.TimeoutException) else 502
                retry = attempt < max_tries and ex.method in IDEMPOTENT
                if self._failed_try(ex, attempt_try, code, exc, retry=retry):
                    continue
                return self._upstream_failure(ex, code)
            headers_ns = time.time_ns()
            try:
                body = b"".join([chunk async for chunk in response.aiter_raw()])  # as sent: no decompression
                await response.aclose()
            except httpx.TransportError as exc:
                await response.aclose()
                self._failed_try(ex, attempt_try, 502, exc, retry=False)
                return self._upstream_failure(ex, 502)
            ex.waiting_ms = (headers_ns - sent_ns) // 1_000_000
            ex.receive_ms = (time.time_ns() - headers_ns) // 1_000_000
            ex.upstream_statuses.append(str(response.status_code))
            ex.status, ex.response_source = response.status_code, "service"
            ex.response_headers = _response_headers(response.headers.multi_items(), len(body))
            return body
        return self._upstream_failure(ex, 502)  # pragma: no cover - the loop always returns

    def _failed_try(self, ex: Exchange, attempt: Try, code: int, exc: Exception, *, retry: bool) -> bool:
        attempt.state, attempt.code = "failed", code
        ex.upstream_statuses.append(str(code))
        log.error("upstream %s try %d failed (%s: %s)%s", attempt.ip, len(ex.tries),
                  type(exc).__name__, exc, "; retrying" if retry else "")
        return retry

    def _upstream_failure(self, ex: Exchange, code: int) -> bytes:
        return self._kong_error_body(ex, code, MSG_504 if code == 504 else MSG_502, "error")

    def _upstream_headers(self, ex: Exchange) -> dict[str, str]:
        """The request as it leaves for the upstream (Kong's nginx proxy_set_header set + propagation changes)."""
        service, route = ex.service, ex.route
        assert service is not None and route is not None
        out = {name: value for name, value in ex.headers.items() if name.lower() not in HOP_BY_HOP | {"host"}}
        default_port = 443 if service.protocol == "https" else 80
        if route.preserve_host:
            out["Host"] = next((v for k, v in ex.incoming if k.lower() == "host"), service.host)
        else:
            out["Host"] = service.host if service.port == default_port else f"{service.host}:{service.port}"
        forwarded_for = ex.header("x-forwarded-for")
        out["X-Forwarded-For"] = f"{forwarded_for}, {ex.client_ip}" if forwarded_for else ex.client_ip
        out["X-Forwarded-Proto"] = ex.scheme
        out["X-Forwarded-Host"] = ex.host
        out["X-Forwarded-Port"] = str(ex.server_port)
        out["X-Forwarded-Path"] = ex.path
        if route.strip_path:
            prefix = matched_prefix(route, ex.path)
            if prefix and prefix != "/":
                out["X-Forwarded-Prefix"] = prefix
        out["X-Real-IP"] = ex.client_ip
        incoming_via = ex.header("via")  # upstream_via: the request's Via plus Kong's inbound hop
        out["Via"] = f"{incoming_via}, {VIA}" if incoming_via else VIA
        out["X-Kong-Request-Id"] = ex.request_id  # headers_upstream = x-kong-request-id (#root-span-attributes)
        return out

    def _header_filter(self, ex: Exchange) -> None:
        tracing = ex.tracing
        root = tracing.root
        if root is not None:  # runloop_before_header_filter
            root.attributes["http.status_code"] = ex.status
            root.attributes["http.route"] = ex.route.paths[0] if ex.route and ex.route.paths else ""
        plugin = ex.runtime.otel
        if plugin is None:
            return
        span = (tracing.start_span("kong.header_filter.plugin.opentelemetry")
                if tracing.enabled("plugin_header_filter") else None)
        header_name = plugin.config.get("http_response_header_for_traceid")
        if header_name:
            trace_id = tracing.raw_trace_id or (root.trace_id if root else None)
            if trace_id:
                ex.response_headers.append((header_name, trace_id.hex()))
        if span is not None:
            tracing.finish(span)

    def _kong_error_body(self, ex: Exchange, status: int, message: str, source: str) -> bytes:
        body = (ERROR_TEMPLATE % (message, ex.request_id)).encode()
        ex.status, ex.response_source = status, source
        ex.response_headers = [("Content-Type", "application/json; charset=utf-8"),
                               ("Content-Length", str(len(body))), ("Server", SERVER)]
        return body

    async def _respond(self, ex: Exchange, send: Send, body: bytes) -> None:
        elapsed_ms = (time.time_ns() - ex.start_ns) // 1_000_000
        headers = list(ex.response_headers)
        if ex.response_source == "service":
            upstream_via = next((v for k, v in headers if k.lower() == "via"), None)
            headers = [(k, v) for k, v in headers if k.lower() != "via"]
            headers += [("X-Kong-Upstream-Latency", str(ex.waiting_ms or 0)),
                        ("X-Kong-Proxy-Latency", str(ex.kong_latency_ms or 0)),
                        ("Via", f"{upstream_via}, {VIA}" if upstream_via else VIA)]
            if not any(k.lower() == "server" for k, _ in headers):
                headers.append(("Server", SERVER))  # Kong replaces a missing upstream Server header
        else:
            headers.append(("X-Kong-Response-Latency", str(elapsed_ms)))
        headers.append(("X-Kong-Request-Id", ex.request_id))
        ex.response_headers = headers
        await _send(send, ex.status, headers, body)
        ex.bytes_sent = response_size(ex.status, headers, body)
        ex.body_filter_end_ns = time.time_ns()

    # ----------------------------------------------------------------------------------------------- log phase

    def _schedule_log(self, ex: Exchange) -> None:
        task = asyncio.get_running_loop().create_task(self._log_phase(ex))
        self.node.counters.in_flight_log_tasks.add(task)
        task.add_done_callback(self.node.counters.in_flight_log_tasks.discard)

    async def _log_phase(self, ex: Exchange) -> None:
        try:
            self._finish_spans(ex)
            self._otel_log(ex)
            prometheus = ex.runtime.prometheus
            if prometheus is not None:
                self.node.registry.log(prometheus.config, serialize(ex), ex.response_source)
            self._tcp_log(ex)
        except Exception:  # a log-phase bug must never take the listener down; it is reported loudly
            log.exception("log phase failed for request %s", ex.request_id)

    def _finish_spans(self, ex: Exchange) -> None:
        """``runloop_log_before``: balancer spans per try (#spans-of-one-proxied-request), then the root ends at
        body-filter end (#span-hierarchy-and-timing)."""
        tracing = ex.tracing
        root = tracing.root
        if root is None:
            return
        end_ns = ex.body_filter_end_ns
        unlinked = tracing.unlinked_balancer if tracing.enabled("balancer") else None
        for index, attempt in enumerate(ex.tries if tracing.enabled("balancer") else (), start=1):
            # Lua numbers are doubles in OTLP (#resource-scope-and-attribute-types)
            attributes: dict[str, Any] = {"try_count": float(index), "net.peer.ip": attempt.ip,
                                          "net.peer.port": float(attempt.port)}
            if index < len(ex.tries) or attempt.state is not None or unlinked is None:
                span = tracing.start_span("kong.balancer", SPAN_KIND_CLIENT, start_ns=attempt.balancer_start_ns,
                                          attributes=attributes)
                end = attempt.balancer_start_ns + attempt.balancer_latency_ns + attempt.connect_ns
                finish_at = max(end, attempt.balancer_start_ns)
            else:
                span = unlinked
                tracing.link_balancer_span(span, attributes, attempt.balancer_start_ns)
                finish_at = end_ns
            if attempt.state is not None:
                span.attributes["http.status_code"] = attempt.code
                span.status = STATUS_ERROR
            if ex.service is not None:
                span.attributes["net.peer.name"] = ex.service.host
            tracing.finish(span, finish_at if finish_at > span.start_ns else span.start_ns + 1000)
        tracing.finish(root, end_ns)

    def _otel_log(self, ex: Exchange) -> None:
        runtime = ex.runtime
        if runtime.otel is None or runtime.otel_exporter is None:
            return
        tracing = ex.tracing
        if tracing.should_sample is False or tracing.root is None:
            return
        for span in tracing.spans:
            runtime.otel_exporter.enqueue(encode_span(span, tracing.raw_trace_id))

    def _tcp_log(self, ex: Exchange) -> None:
        runtime = ex.runtime
        if runtime.tcp_log is None or runtime.tcp_sender is None:
            return
        try:
            if runtime.lua_fields:
                runtime.lua_fields.evaluate(
                    serialize=lambda: serialize(ex), get_header=lambda name: ex.header(str(name)),
                    set_serialize_value=lambda key, value: ex.serialize_values.append((key, value)))
            line = tcplog.cjson_encode(serialize(ex))
        except Exception as exc:  # Lua runtime error, serialize error: the handler aborts, the line is lost
            log.error("tcp-log: log handler failed for request %s, line not sent: %s",
                      ex.request_id, exc)
            return
        runtime.tcp_sender.send(line)


def _response_headers(items: list[tuple[str, str]], body_length: int) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in items if k.lower() not in HOP_BY_HOP | {"content-length"}]
    out.append(("Content-Length", str(body_length)))
    return out


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _send(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

