"""The sink as an ASGI app (starlette): OTLP/HTTP ingest with Dynatrace's rules, and the JSON query API.

Ingest evaluation order (docs/reference/dynatrace-otlp.md#behaviour-matrix):
route -> auth -> content type -> encoding/size -> decode -> fault
injection -> per-signal rules -> store. Every refusal is answered with a ``google.rpc.Status`` body in the request's
encoding and recorded as a rejection. The request body is read incrementally; gzip is inflated with a bounded
``max_length`` per step, so a gzip bomb is refused once the cap is passed, without ever holding more than the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from otelgate.otlp import (
    JSON_CONTENT_TYPE,
    NORMALIZERS,
    PROTOBUF_CONTENT_TYPE,
    SIGNALS,
    Encoding,
    OtlpDecodeError,
    count_items,
    decode_request,
    encode_response,
    encode_status,
)
from otelgate.sink import rules
from otelgate.sink.config import SIGNAL_SCOPES, SinkConfig
from otelgate.sink.faults import Fault, Faults, InvalidFault
from otelgate.sink.store import InvalidDump, Store
from otelgate.sink.workers import SpanPreparer

log = logging.getLogger("otelgate.sink")

# after a refusal the rest of the body is read and thrown away (so the client sees the answer), up to this much
DRAIN_BUDGET = 64 * 1024 * 1024

GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 8, 415: 3, 429: 8, 500: 13, 501: 12, 502: 14,
              503: 14, 504: 14}
BEARER_MESSAGE = "Authorization header contains unsupported authorization scheme 'Bearer'"


@dataclass
class Refusal(Exception):
    http_status: int
    reason: str
    message: str
    items: int = 0


class SinkState:
    """What the app needs at run time; shared with SinkServer so tests can reach the store directly."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.store = Store(config.max_items)
        self.faults = Faults()
        self.preparer = SpanPreparer(config.workers)


# ------------------------------------------------------------------------------------------------ responses


class JsonResponse(Response):
    """JSON that survives anything the sink may have stored: NaN values, lone surrogates in strings."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=True, separators=(",", ":")).encode("ascii")


def status_response(http_status: int, message: str, encoding: Encoding,
                    headers: Mapping[str, str] | None = None) -> Response:
    body = encode_status(GRPC_CODES.get(http_status, 2), message, encoding)
    media_type = JSON_CONTENT_TYPE if encoding == "json" else PROTOBUF_CONTENT_TYPE
    return Response(body, status_code=http_status, media_type=media_type, headers=dict(headers or {}))


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# ------------------------------------------------------------------------------------------------ body reading


class _Inflater:
    """Incremental gzip/deflate with a hard cap on the output; concatenated gzip members are allowed."""

    def __init__(self, wbits: int, limit: int) -> None:
        self._wbits = wbits
        self._limit = limit
        self._inflater = zlib.decompressobj(wbits)
        self._parts: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        while data:
            if self._inflater.eof:
                self._inflater = zlib.decompressobj(self._wbits)
            try:
                out = self._inflater.decompress(data, self._limit - self.size + 1)
            except zlib.error as exc:
                raise Refusal(400, "MALFORMED", f"the body is not valid compressed data: {exc}") from exc
            self.size += len(out)
            if self.size > self._limit:
                raise Refusal(413, "PAYLOAD_TOO_LARGE", f"decompressed body exceeds {self._limit} bytes")
            self._parts.append(out)
            data = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail

    def finish(self) -> bytes:
        if not self._inflater.eof:
            raise Refusal(400, "MALFORMED", "the compressed body is truncated (no end of stream)")
        return b"".join(self._parts)


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyReader:
    def __init__(self, request: Request) -> None:
        self.request = request
        self.raw_bytes = 0

    async def read(self, content_encoding: str, limit: int) -> bytes:
        inflater = _Inflater(_WBITS[content_encoding], limit) if content_encoding in _WBITS else None
        parts: list[bytes] = []
        async for chunk in self.request.stream():
            self.raw_bytes += len(chunk)
            if self.raw_bytes > limit:
                raise Refusal(413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes")
            if inflater is not None:
                inflater.feed(chunk)
            elif chunk:
                parts.append(chunk)
        if inflater is None or self.raw_bytes == 0:
            return b"".join(parts)
        return inflater.finish()

    async def drain(self) -> None:
        try:
            async for chunk in self.request.stream():
                self.raw_bytes += len(chunk)
                if self.raw_bytes > DRAIN_BUDGET:
                    return
        except (ClientDisconnect, RuntimeError):  # RuntimeError: the stream was consumed already
            return


# ------------------------------------------------------------------------------------------------ ingest checks


def check_auth(header: str | None, signal: str, config: SinkConfig) -> Refusal | None:
    if not config.is_dynatrace:
        return None
    if not header or not header.strip():
        return Refusal(401, "UNAUTHENTICATED", "Missing authorization parameter.")
    scheme, _, credential = header.strip().partition(" ")
    scheme_lower = scheme.lower()
    if scheme_lower == "bearer" and not config.allow_bearer:
        return Refusal(401, "UNAUTHENTICATED", BEARER_MESSAGE)
    if scheme_lower not in ("api-token", "bearer"):
        return Refusal(401, "UNAUTHENTICATED",
                       f"Authorization header contains unsupported authorization scheme '{scheme[:40]}'")
    assert config.token is not None  # SinkConfig refuses a dynatrace profile without one
    if not hmac.compare_digest(credential.strip().encode(), config.token.encode()):
        return Refusal(401, "UNAUTHENTICATED", "Token Authentication failed")
    if not config.has_scope(signal):
        return Refusal(403, "MISSING_SCOPE", f"Token is missing required scope. Use one of: {SIGNAL_SCOPES[signal]}")
    return None


def check_content(request: Request, config: SinkConfig) -> tuple[Encoding, str]:
    content_type = media_type(request)
    if content_type not in config.accepted_content_types:
        raise Refusal(415, "UNSUPPORTED_MEDIA_TYPE",
                      f"Unsupported Content-Type '{content_type[:100]}'; use "
                      + " or ".join(config.accepted_content_types))
    encoding: Encoding = "json" if content_type == JSON_CONTENT_TYPE else "protobuf"
    content_encoding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    allowed = ("identity", "gzip", "x-gzip") if config.is_dynatrace else ("identity", "gzip", "x-gzip", "deflate")
    if content_encoding not in allowed:
        raise Refusal(415, "UNSUPPORTED_CONTENT_ENCODING",
                      f"Unsupported Content-Encoding '{content_encoding[:100]}'; use gzip or none")
    return encoding, content_encoding


def check_counts(signal: str, message: Any, config: SinkConfig) -> int:
    """Refuse requests Dynatrace drops as a whole because of their item count; returns the count."""
    count = count_items(signal, message)
    if not config.is_dynatrace:
        return count
    if signal == "metrics" and count > config.max_data_points and config.too_many_points == "413":
        raise Refusal(413, "DATA_POINT_COUNT_EXCEEDED",
                      f"{count} data points exceed the limit of {config.max_data_points} per request", count)
    if signal == "logs" and count > config.max_log_records:
        raise Refusal(413, "LOG_RECORD_COUNT_EXCEEDED",
                      f"{count} log records exceed the limit of {config.max_log_records} per request", count)
    return count


# ------------------------------------------------------------------------------------------------ the app


def build_app(state: SinkState) -> Starlette:
    config, store, faults = state.config, state.store, state.faults

    async def refuse(signal: str | None, reader: BodyReader | None, refusal: Refusal, encoding: Encoding,
                     headers: Mapping[str, str] | None = None) -> Response:
        if reader is not None:
            await reader.drain()
        if signal is not None:
            store.count_request(signal, reader.raw_bytes if reader else 0)
        store.reject([rules.rejection(signal, refusal.http_status, refusal.reason, refusal.message, refusal.items)])
        log.info("refused %s request: HTTP %d %s: %s", signal or "unknown", refusal.http_status, refusal.reason,
                 refusal.message)
        return status_response(refusal.http_status, refusal.message, encoding, headers)

    async def ingest(request: Request) -> Response:
        signal = request.path_params["signal"]
        if signal not in SIGNALS:
            return await not_found(request, HTTPException(404))
        reader = BodyReader(request)
        encoding: Encoding = "protobuf"
        try:
            refusal = check_auth(request.headers.get("authorization"), signal, config)
            if refusal is not None:
                raise refusal
            encoding, content_encoding = check_content(request, config)
            body = await reader.read(content_encoding, config.size_limit(signal))
            if signal == "traces":
                return await ingest_spans(reader, body, encoding)
            try:
                message = decode_request(signal, body, encoding)
            except OtlpDecodeError as exc:
                raise Refusal(400, "MALFORMED", str(exc)[:1000]) from exc
            fault = faults.take(signal)
            if fault is not None:
                fault_response = await apply_fault(signal, reader, fault, encoding)
                if fault_response is not None:
                    return fault_response
            count = check_counts(signal, message, config)
            if signal == "metrics" and config.is_dynatrace and count > config.max_data_points:
                return reject_all_points(reader, count, encoding)
        except Refusal as refusal:
            return await refuse(signal, reader, refusal, encoding)
        except ClientDisconnect:
            store.count_request(signal, reader.raw_bytes)
            return Response(status_code=400)
        return store_and_answer(signal, reader.raw_bytes, message, encoding)

    async def ingest_spans(reader: BodyReader, body: bytes, encoding: Encoding) -> Response:
        """Traces: decoded and checked now, kept compact, normalized when read (``spanstore``); raises Refusal."""
        received_at = time.time()
        try:
            if encoding == "json":  # the otlp profile: keep the protobuf form of the same message
                body = decode_request("traces", body, "json").SerializeToString()
            prepared = await state.preparer.prepare(body, rules.span_window(config))
        except OtlpDecodeError as exc:
            raise Refusal(400, "MALFORMED", str(exc)[:1000]) from exc
        fault = faults.take("traces")
        if fault is not None:
            fault_response = await apply_fault("traces", reader, fault, encoding)
            if fault_response is not None:
                return fault_response
        store.count_request("traces", reader.raw_bytes)
        store.count_accepted_request("traces")
        store.add_spans(body, received_at, prepared)
        rejected, message = 0, ""
        if prepared.dropped and prepared.example is not None:
            example = prepared.example
            records, rejected, message = rules.dropped_spans_verdict(
                prepared.dropped, example.name, example.trace_id, example.end_unix_nano, config)
            store.reject(records)
            log.info("partly refused traces: %s (%d item(s))", records[0]["message"], prepared.dropped)
        return Response(encode_response("traces", encoding, rejected, message), media_type=_media(encoding))

    async def apply_fault(signal: str, reader: BodyReader, fault: Fault, encoding: Encoding) -> Response | None:
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.status is None:
            return None
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
        refusal = Refusal(fault.status, "FAULT_INJECTED", f"fault injected by the test: HTTP {fault.status}")
        return await refuse(signal, reader, refusal, encoding, headers)

    def reject_all_points(reader: BodyReader, count: int, encoding: Encoding) -> Response:
        """The partial-success answer to a request over the data point limit (``too_many_points``)."""
        text = rules.too_many_points(count, config)
        store.count_request("metrics", reader.raw_bytes)
        store.count_accepted_request("metrics")
        store.reject([rules.rejection("metrics", 200, "DATA_POINT_COUNT_EXCEEDED", text, count)])
        return Response(encode_response("metrics", encoding, count, text), media_type=_media(encoding))

    def store_and_answer(signal: str, raw_bytes: int, message: Any, encoding: Encoding) -> Response:
        items = NORMALIZERS[signal](message, time.time())
        verdict = rules.apply_rules(signal, items, config)
        store.count_request(signal, raw_bytes)
        store.count_accepted_request(signal)
        store.add(signal, verdict.accepted)
        if verdict.rejections:
            store.reject(verdict.rejections)
            for record in verdict.rejections:
                log.info("partly refused %s: %s (%d item(s))", signal, record["message"].rstrip(), record["items"])
        body = encode_response(signal, encoding, verdict.rejected, verdict.message)
        return Response(body, media_type=_media(encoding))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        path = request.url.path
        if path.startswith("/api/") and not path.startswith("/api/v2/otlp"):
            problem = "not found" if status == 404 else "method not allowed"
            return JsonResponse({"error": f"{request.method} {path}: {problem}"}, status_code=status)
        encoding: Encoding = "json" if media_type(request) == JSON_CONTENT_TYPE and not config.is_dynatrace \
            else "protobuf"
        where = f"{config.ingest_prefix}/v1/{{traces,metrics,logs}}"
        if status == 405:
            return status_response(405, f"method {request.method} not allowed on {path}; use POST", encoding)
        message = f"no OTLP endpoint at {path[:200]}; the {config.profile} profile ingests at {where}"
        if request.method == "POST":
            return await refuse(None, BodyReader(request), Refusal(404, "NOT_FOUND", message), encoding)
        return status_response(404, message, encoding)

    routes = [Route(f"{config.ingest_prefix}/v1/{{signal}}", ingest, methods=["POST"])]
    if config.is_dynatrace:
        routes.append(Route("/e/{env}/api/v2/otlp/v1/{signal}", ingest, methods=["POST"]))
    routes += query_routes(state)
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def _media(encoding: Encoding) -> str:
    return JSON_CONTENT_TYPE if encoding == "json" else PROTOBUF_CONTENT_TYPE


# ------------------------------------------------------------------------------------------------ query API


def _attr_filters(request: Request) -> dict[str, str]:
    return {key[5:]: value for key, value in request.query_params.items() if key.startswith("attr.")}


def query_routes(state: SinkState) -> list[Route]:
    config, store, faults = state.config, state.store, state.faults

    # span reads normalize on demand (seconds for a full store): in a thread, so ingest keeps being answered
    async def spans(request: Request) -> Response:
        q = request.query_params
        found = await asyncio.to_thread(store.find_spans, q.get("trace_id") or None, q.get("service"),
                                        q.get("name"), _attr_filters(request))
        return await asyncio.to_thread(JsonResponse, found)

    async def traces(request: Request) -> Response:
        return await asyncio.to_thread(lambda: JsonResponse(store.trace_summaries()))

    async def trace(request: Request) -> Response:
        trace_id = request.path_params["trace_id"].lower()
        return JsonResponse({"trace_id": trace_id, "spans": await asyncio.to_thread(store.trace, trace_id)})

    async def metrics(request: Request) -> Response:
        return JsonResponse(store.find_metric_points(request.query_params.get("name") or None,
                                                     _attr_filters(request)))

    async def logs(request: Request) -> Response:
        return JsonResponse(store.find_logs(request.query_params.get("trace_id") or None, _attr_filters(request)))

    async def rejections(request: Request) -> Response:
        return JsonResponse(store.find_rejections(request.query_params.get("signal") or None))

    async def stats(request: Request) -> Response:
        return JsonResponse(store.stats_snapshot())

    async def reset(request: Request) -> Response:
        store.reset()
        faults.clear()
        return JsonResponse({"reset": True})

    async def dump(request: Request) -> Response:
        return await asyncio.to_thread(lambda: JsonResponse(store.dump(config.profile)))

    async def load(request: Request) -> Response:
        try:
            document = json.loads(await request.body())
            store.load(document)
        except (ValueError, InvalidDump) as exc:
            return JsonResponse({"error": f"cannot load the dump: {exc}"}, status_code=400)
        return JsonResponse({"loaded": store.sizes()})

    async def add_fault(request: Request) -> Response:
        try:
            fault = Fault.from_json(json.loads(await request.body()))
        except (ValueError, InvalidFault) as exc:
            return JsonResponse({"error": f"invalid fault: {exc}"}, status_code=400)
        faults.add(fault)
        return JsonResponse({"faults": faults.snapshot()})

    async def list_faults(request: Request) -> Response:
        return JsonResponse({"faults": faults.snapshot()})

    async def clear_faults(request: Request) -> Response:
        faults.clear()
        return JsonResponse({"faults": []})

    async def process(request: Request) -> Response:
        return JsonResponse(process_usage(state.preparer.worker_pids()))

    async def healthz(request: Request) -> Response:
        return JsonResponse({"status": "ok", "profile": config.profile, "store": store.sizes(),
                             "config": config.public_view(), "offloaded_requests": state.preparer.offloaded})

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/api/spans", spans, methods=["GET"]),
        Route("/api/traces", traces, methods=["GET"]),
        Route("/api/traces/{trace_id}", trace, methods=["GET"]),
        Route("/api/metrics", metrics, methods=["GET"]),
        Route("/api/logs", logs, methods=["GET"]),
        Route("/api/rejections", rejections, methods=["GET"]),
        Route("/api/stats", stats, methods=["GET"]),
        Route("/api/process", process, methods=["GET"]),
        Route("/api/reset", reset, methods=["POST"]),
        Route("/api/dump", dump, methods=["GET"]),
        Route("/api/load", load, methods=["POST"]),
        Route("/api/faults", add_fault, methods=["POST"]),
        Route("/api/faults", list_faults, methods=["GET"]),
        Route("/api/faults", clear_faults, methods=["DELETE"]),
    ]


def process_usage(worker_pids: list[int]) -> dict[str, Any]:
    """The sink's own CPU time and memory, for load reports that must tell a busy sink from a busy pipeline.

    ``cpu_seconds`` is the main process (its event loop serves every request and owns the store: at one core's
    worth of CPU it limits the rate); the decode workers are reported beside it.
    """
    me = psutil.Process()
    times = me.cpu_times()
    workers_cpu, workers_rss = 0.0, 0
    for pid in worker_pids:
        with contextlib.suppress(psutil.Error):
            worker = psutil.Process(pid)
            worker_times = worker.cpu_times()
            workers_cpu += worker_times.user + worker_times.system
            workers_rss += worker.memory_info().rss
    return {"pid": me.pid, "cpu_seconds": times.user + times.system, "rss_bytes": me.memory_info().rss,
            "workers": len(worker_pids), "workers_cpu_seconds": workers_cpu, "workers_rss_bytes": workers_rss,
            "monotonic": time.monotonic()}


def create_app(config: SinkConfig) -> tuple[Starlette, SinkState]:
    state = SinkState(config)
    return build_app(state), state
