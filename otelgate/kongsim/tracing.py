"""Kong 3.9's tracing, as the Kong simulator (a TEST DOUBLE, not Kong) reproduces it.

Pinned to docs/reference/kong-3.9.md: the span set and attributes of ``tracing_instrumentations``
(#span-names-and-kinds), resource / scope / attribute typing (#resource-scope-and-attribute-types), the export queue
(#span-export-and-queue) and the deterministic sampler (#sampler); propagation is in ``propagation``. What this
module produces is the simulator's imitation of Kong; it proves nothing about real Kong.

``#anchor`` in comments names a section of docs/reference/kong-3.9.md (Kong 3.9.1's facts, with sources).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

log = logging.getLogger("otelgate.kongsim.tracing")

KONG_VERSION = "3.9.1"
SCOPE_NAME, SCOPE_VERSION = "kong-internal", "0.1.0"  # always this scope (#resource-scope-and-attribute-types)
SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 1, 2, 3
STATUS_ERROR = 2

# the instrumentation types Kong 3.9.1 knows: the functions of instrumentation.lua collected into available_types
# (kong/observability/tracing/instrumentation.lua:39-220,323) plus what kong/conf_loader/parse.lua:819-836 accepts
INSTRUMENTATIONS = ("db_query", "router", "create_span", "balancer", "plugin_rewrite", "plugin_access",
                    "plugin_header_filter", "http_client", "dns_query", "request")


def parse_instrumentations(value: str) -> frozenset[str]:
    """kong.conf ``tracing_instrumentations`` as Kong reads it: empty when tracing is off, else the enabled types.

    Kong checks only the FIRST item for ``off`` and ``all`` (instrumentation.lua:409,422), rejects unknown types
    and ``off`` combined with others (conf_loader/parse.lua:826-836). Any non-``off`` list enables the root span
    (``request`` is not in ``available_types``, so it is never switched off)."""
    items = [x.strip() for x in value.split(",") if x.strip()]
    if not items:
        raise ValueError("tracing_instrumentations is empty; Kong's default is off")
    unknown = [x for x in items if x not in (*INSTRUMENTATIONS, "all", "off")]
    if unknown:
        raise ValueError("; ".join(f"invalid tracing type: {x}" for x in unknown)
                         + f" (Kong knows off, all, {', '.join(INSTRUMENTATIONS)})")
    if len(items) > 1 and "off" in items:
        raise ValueError("invalid tracing types: off, other types are mutually exclusive")
    if items[0] == "off":
        return frozenset()
    if items[0] == "all":
        return frozenset((*INSTRUMENTATIONS, "all"))
    return frozenset(items)


def random_trace_id() -> bytes:
    return os.urandom(16)


def random_span_id() -> bytes:
    return os.urandom(8)


def to_id_size(raw: bytes | None, size: int) -> bytes | None:
    """Left-pad with zero bytes or keep the low-order bytes (Kong's ``to_id_size``)."""
    if raw is None:
        return None
    if len(raw) > size:
        return raw[-size:]
    return b"\0" * (size - len(raw)) + raw


# ---------------------------------------------------------------------------------------------------------------
# sampling (#sampler)

# TEST-ONLY switch: a deliberately WRONG sampler, for the acceptance test that the sampling suite catches each
# (tests/test_sampling_variants.py). Read once when the simulator starts; unset in every other use.
SAMPLER_VARIANT_ENV = "OTELGATE_KONGSIM_SAMPLER_VARIANT"
SAMPLER_VARIANTS = ("wrong-bytes", "big-endian", "inverted", "threshold+10%")
SAMPLER_VARIANT = os.environ.get(SAMPLER_VARIANT_ENV, "")
if SAMPLER_VARIANT and SAMPLER_VARIANT not in SAMPLER_VARIANTS:
    raise ValueError(f"{SAMPLER_VARIANT_ENV}={SAMPLER_VARIANT!r} (test-only) is none of {', '.join(SAMPLER_VARIANTS)}")


def sample_trace_id(trace_id: bytes, rate: float) -> bool:
    """Kong's ratio sampler (#ratio-sampler): the first 8 bytes of the trace id as a native-endian uint64
    (little-endian on x86-64/arm64) compared with ``rate * 2**64``. Deterministic per trace id."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    if SAMPLER_VARIANT:
        return _wrong_sample_trace_id(SAMPLER_VARIANT, trace_id, rate)
    return int.from_bytes(trace_id[:8], "little") < rate * 2**64


def _wrong_sample_trace_id(variant: str, trace_id: bytes, rate: float) -> bool:
    """The test-only wrong samplers of :data:`SAMPLER_VARIANTS` (never Kong's behaviour)."""
    if variant == "wrong-bytes":
        return int.from_bytes(trace_id[8:16], "little") < rate * 2**64
    if variant == "big-endian":
        return int.from_bytes(trace_id[:8], "big") < rate * 2**64
    if variant == "inverted":
        return int.from_bytes(trace_id[:8], "little") >= (1 - rate) * 2**64
    return int.from_bytes(trace_id[:8], "little") < min(1.0, rate * 1.1) * 2**64


# ---------------------------------------------------------------------------------------------------------------
# spans of one request

@dataclass
class Span:
    name: str
    kind: int
    trace_id: bytes
    span_id: bytes
    parent: Span | None = None
    parent_id: bytes | None = None
    start_ns: int = 0
    end_ns: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    status: int | None = None  # #resource-scope-and-attribute-types: set only on error (2)
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    propagation_only: bool = False


class RequestTracing:
    """``ngx.ctx.KONG_SPANS`` plus the active span of one request (3.8+ nesting, #span-hierarchy-and-timing)."""

    def __init__(self, instrumentations: frozenset[str]) -> None:
        self.instrumentations = instrumentations
        self.spans: list[Span] = []
        self.active: Span | None = None
        self.raw_trace_id: bytes | None = None
        self.unlinked_balancer: Span | None = None
        self.should_sample: bool | None = None
        self.trace_id_formats: dict[str, str] = {}

    def enabled(self, instrumentation: str) -> bool:
        return instrumentation in self.instrumentations

    @property
    def root(self) -> Span | None:
        return self.spans[0] if self.spans else None

    def create_span(self, name: str, kind: int = SPAN_KIND_INTERNAL, *, parent: Span | None = None,
                    start_ns: int | None = None, attributes: Mapping[str, Any] | None = None) -> Span:
        """A span that is not (yet) in the request's span list (Kong's ``create_span``)."""
        trace_id = parent.trace_id if parent else random_trace_id()
        return Span(name=name, kind=kind, trace_id=trace_id, span_id=random_span_id(), parent=parent,
                    parent_id=parent.span_id if parent else None, start_ns=start_ns or time.time_ns(),
                    attributes=dict(attributes or {}))

    def start_span(self, name: str, kind: int = SPAN_KIND_INTERNAL, *, start_ns: int | None = None,
                   attributes: Mapping[str, Any] | None = None, activate: bool = True) -> Span:
        """Start a span under the active span; it becomes the active span (3.8+, #span-hierarchy-and-timing)."""
        span = self.create_span(name, kind, parent=self.active, start_ns=start_ns, attributes=attributes)
        self.spans.append(span)
        if activate:
            self.active = span
        return span

    def finish(self, span: Span, end_ns: int | None = None) -> None:
        """Finish ``span``; if it is active, its parent becomes active again (``finish()`` restores it)."""
        if span.end_ns is not None:
            return
        span.end_ns = end_ns or time.time_ns()
        if self.active is span:
            self.active = span.parent

    def link_balancer_span(self, span: Span, attributes: Mapping[str, Any], start_ns: int) -> None:
        """The pre-created balancer span gets its name, start and attributes at log time (``link_span``)."""
        span.name = "kong.balancer"
        span.start_ns = start_ns
        span.attributes.update(attributes)
        self.spans.append(span)


# ---------------------------------------------------------------------------------------------------------------
# OTLP encoding (#resource-scope-and-attribute-types)

def _any_value(key: str | None, value: Any) -> AnyValue:
    if key == "http.status_code" and isinstance(value, int | float):
        return AnyValue(int_value=int(value))  # the only int attribute (#resource-scope-and-attribute-types)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int | float):
        return AnyValue(double_value=float(value))  # other Lua numbers: doubles (#resource-scope-and-attribute-types)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    return AnyValue()


def _attributes(attrs: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any_value(k, v)) for k, v in attrs.items()]


def encode_span(span: Span, trace_id: bytes | None) -> PbSpan:
    pb = PbSpan(
        trace_id=to_id_size(trace_id or span.trace_id, 16) or b"",
        span_id=span.span_id,
        parent_span_id=to_id_size(span.parent_id, 8) or b"",
        name=span.name, kind=span.kind,  # type: ignore[arg-type]
        start_time_unix_nano=span.start_ns, end_time_unix_nano=span.end_ns or span.start_ns,
        attributes=_attributes(span.attributes),
    )
    for name, time_ns, attrs in span.events:
        pb.events.add(name=name, time_unix_nano=time_ns, attributes=_attributes(attrs))
    if span.status is not None:
        pb.status.CopyFrom(Status(code=span.status))  # type: ignore[arg-type]
    return pb


def resource_attributes(node_id: str, configured: Mapping[str, str] | None) -> dict[str, str]:
    """Defaults merged under ``config.resource_attributes`` (#resource-scope-and-attribute-types)."""
    return {"service.name": "kong", "service.instance.id": node_id, "service.version": KONG_VERSION,
            **dict(configured or {})}


def encode_traces(spans: Iterable[PbSpan], resource: Mapping[str, str]) -> bytes:
    """One resource_spans -> one scope_spans (kong-internal 0.1.0) -> N spans (#resource-scope-and-attribute-types)."""
    request = ExportTraceServiceRequest()
    resource_spans = ResourceSpans()
    resource_spans.resource.attributes.extend(_attributes(resource))
    scope_spans = ScopeSpans()
    scope_spans.scope.name, scope_spans.scope.version = SCOPE_NAME, SCOPE_VERSION
    scope_spans.spans.extend(spans)
    resource_spans.scope_spans.append(scope_spans)
    request.resource_spans.append(resource_spans)
    return request.SerializeToString()


# ---------------------------------------------------------------------------------------------------------------
# the export queue (#span-export-and-queue)

class SpanExporter:
    """One ``kong.tools.queue`` for one opentelemetry plugin instance (``<plugin id>:traces``).

    Spans are enqueued one by one in the log phase (never blocking the request); a single consumer task sends
    batches of up to ``max_batch_size`` spans, waiting up to ``max_coalescing_delay`` for a batch to fill. A batch
    fails on anything but HTTP 200. Facts from Kong/kong@3.9.1 kong/tools/queue.lua:
    * retry (:319-356): after a failure, give up when more than ``max_retry_time`` has elapsed since the first
      attempt, else sleep ``min(max_retry_delay, 2**n * initial_retry_delay)`` and try again;
    * full queue (:540-544): the OLDEST entry is dropped to make room ("queue full, dropping old entries until
      processing is successful again");
    * one queue per name (:205-216): a config reload that keeps the plugin keeps the queue and its entries; only
      the handler's configuration (endpoint, headers, timeouts, resource) is replaced; the queue parameters stay
      those it was created with. The plugin id (the queue name) is stable across reloads for a global plugin
      (kong/db/schema/others/declarative_config.lua:549-640 derives it from the cache key).
    """

    def __init__(self, conf: Mapping[str, Any], node_id: str) -> None:
        queue = conf["queue"]
        self.max_batch_size = int(queue["max_batch_size"])
        self.max_coalescing_delay = float(queue["max_coalescing_delay"])
        self.max_entries = int(queue["max_entries"])
        self.max_retry_time = float(queue["max_retry_time"])
        self.initial_retry_delay = float(queue["initial_retry_delay"])
        self.max_retry_delay = float(queue["max_retry_delay"])
        self.configure(conf, node_id)
        self._queue: asyncio.Queue[PbSpan] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._busy = False  # a batch is being sent (or retried)
        self.sent_batches = 0
        self.sent_spans = 0
        self.dropped_spans = 0
        self.closed = False

    def configure(self, conf: Mapping[str, Any], node_id: str) -> None:
        """The handler configuration (``queue.handler_conf``): replaced on every reload that keeps the queue."""
        self.endpoint: str = conf["traces_endpoint"]
        headers = dict(conf.get("headers") or {})
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/x-protobuf"  # added unless the user set one (#span-export-and-queue)
        self.headers = headers
        self.timeout = httpx.Timeout(connect=conf["connect_timeout"] / 1000, write=conf["send_timeout"] / 1000,
                                     read=conf["read_timeout"] / 1000, pool=conf["connect_timeout"] / 1000)
        self.resource = resource_attributes(node_id, conf.get("resource_attributes"))

    def start(self) -> None:
        if self._task is not None:  # a queue kept across a reload is already running
            return
        self._client = httpx.AsyncClient()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"otel-queue {self.endpoint}")

    def enqueue(self, span: PbSpan) -> None:
        if self.closed:  # a request that started before a config reload finished after it
            self.dropped_spans += 1
            log.error("queue opentelemetry:traces: span of a retired config dropped (reload during traffic)")
            return
        if self._queue.qsize() >= self.max_entries:
            self._queue.get_nowait()  # drop the oldest entry (queue.lua:540-544)
            self.dropped_spans += 1
            log.error("queue opentelemetry:traces: queue full, dropping old entries until processing is "
                      "successful again")
        self._queue.put_nowait(span)

    def pending(self) -> int:
        return self._queue.qsize()

    def idle(self) -> bool:
        return not self._queue.qsize() and not self._busy

    async def _next_batch(self) -> list[PbSpan]:
        batch = [await self._queue.get()]
        self._busy = True
        deadline = time.monotonic() + self.max_coalescing_delay
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            self._busy = True
            try:
                await self._send_with_retries(batch)
            finally:
                self._busy = False

    async def _send_with_retries(self, batch: list[PbSpan]) -> None:
        started = time.monotonic()
        attempt = 0
        while True:
            error = await self._send_once(encode_traces(batch, self.resource))  # the current handler conf
            if error is None:
                self.sent_batches += 1
                self.sent_spans += len(batch)
                log.debug("[otel] exporter sent %d spans to %s", len(batch), self.endpoint)
                return
            log.error("[otel] %s", error)
            if time.monotonic() - started > self.max_retry_time:  # checked before sleeping (queue.lua:343-353)
                self.dropped_spans += len(batch)
                log.error("queue opentelemetry:traces: could not send entries due to max_retry_time exceeded. "
                          "%d queue entries were lost", len(batch))
                return
            await asyncio.sleep(min(self.max_retry_delay, 2**attempt * self.initial_retry_delay))
            attempt += 1

    async def _send_once(self, payload: bytes) -> str | None:
        assert self._client is not None
        try:
            response = await self._client.post(self.endpoint, content=payload, headers=self.headers,
                                               timeout=self.timeout)
        except httpx.HTTPError as exc:
            return f"failed to send request: {type(exc).__name__}: {exc} (endpoint {self.endpoint})"
        if response.status_code != 200:  # only 200 is success (#span-export-and-queue)
            return f"response error: {response.status_code}, body: {response.text[:300]}"
        return None

    async def flush(self, timeout: float | None) -> None:
        """Wait until the queue is empty and no batch is in flight (``None``: as long as that takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.idle() and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.closed = True
        if self._queue.qsize():
            self.dropped_spans += self._queue.qsize()
            log.error("queue opentelemetry:traces: %d spans not sent at shutdown/reload", self._queue.qsize())
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client:
            await self._client.aclose()
