"""Kong 3.9's tracing, as the Kong simulator (a TEST DOUBLE, not Kong) reproduces it.

Pinned to ``shared/reference/kong-3.9-telemetry.md``: the span set and attributes of ``tracing_instrumentations``
(§2), resource / scope / attribute typing (§3), the export queue (§4), propagation (§6) and the deterministic
sampler (§7). What this module produces is the simulator's imitation of Kong; it proves nothing about real Kong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

log = logging.getLogger("otelgate.kongsim.tracing")

KONG_VERSION = "3.9.1"
SCOPE_NAME, SCOPE_VERSION = "kong-internal", "0.1.0"  # §3: always this scope
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
# sampling (§7)

# TEST-ONLY switch: a deliberately WRONG sampler, for the acceptance test that the sampling suite catches each
# (tests/test_sampling_variants.py). Read once when the simulator starts; unset in every other use.
SAMPLER_VARIANT_ENV = "OTELGATE_KONGSIM_SAMPLER_VARIANT"
SAMPLER_VARIANTS = ("wrong-bytes", "big-endian", "inverted", "threshold+10%")
SAMPLER_VARIANT = os.environ.get(SAMPLER_VARIANT_ENV, "")
if SAMPLER_VARIANT and SAMPLER_VARIANT not in SAMPLER_VARIANTS:
    raise ValueError(f"{SAMPLER_VARIANT_ENV}={SAMPLER_VARIANT!r} (test-only) is none of {', '.join(SAMPLER_VARIANTS)}")


def sample_trace_id(trace_id: bytes, rate: float) -> bool:
    """Kong's ratio sampler (§7.2): the first 8 bytes of the trace id as a native-endian uint64 (little-endian on
    x86-64/arm64) compared with ``rate * 2**64``. Deterministic per trace id."""
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
    status: int | None = None  # §3: set only on error (2)
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    propagation_only: bool = False


class RequestTracing:
    """``ngx.ctx.KONG_SPANS`` plus the active span of one request (3.8+ nesting, §2.4)."""

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
        """Start a span under the active span; it becomes the active span (3.8+, §2.4)."""
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
# propagation (§6)

@dataclass
class ExtractedContext:
    trace_id: bytes | None = None
    span_id: bytes | None = None
    parent_id: bytes | None = None
    should_sample: bool | None = None
    w3c_flags: int | None = None
    flags: str | None = None  # b3 debug flag ("1")
    single_header: bool = False
    trace_id_original_size: int | None = None


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)


def extract_w3c(headers: Mapping[str, str]) -> ExtractedContext | None:
    """``traceparent`` with version 00, non-zero 32-hex trace id and 16-hex parent id, 2-hex flags (§6)."""
    value = headers.get("traceparent")
    if not value:
        return None
    parts = value.split("-")
    if len(parts) != 4 or not all(_is_hex(p) for p in parts):
        log.warning("invalid W3C traceparent header; ignoring.")
        return None
    version, trace_hex, parent_hex, flags = parts
    if version != "00":
        log.warning("invalid W3C Trace Context version; ignoring.")
        return None
    if len(trace_hex) != 32 or int(trace_hex, 16) == 0:
        log.warning("invalid W3C trace context trace ID; ignoring.")
        return None
    if len(parent_hex) != 16 or int(parent_hex, 16) == 0:
        log.warning("invalid W3C trace context parent ID; ignoring.")
        return None
    if len(flags) != 2:
        log.warning("invalid W3C trace context flags; ignoring.")
        return None
    flags_number = int(flags, 16)
    return ExtractedContext(trace_id=bytes.fromhex(trace_hex), span_id=bytes.fromhex(parent_hex),
                            should_sample=flags_number % 2 == 1, w3c_flags=flags_number)


def _b3_single(value: str) -> tuple[ExtractedContext, bool]:
    """Returns the context and whether its ids are invalid."""
    if value in ("1", "d"):
        return ExtractedContext(should_sample=True, flags="1" if value == "d" else None), False
    if value == "0":
        return ExtractedContext(should_sample=False), False
    parts = value.split("-")
    trace_hex = parts[0]
    span_hex = parts[1] if len(parts) > 1 else ""
    sampled = parts[2] if len(parts) > 2 else ""
    parent_hex = parts[3] if len(parts) > 3 else ""
    if len(parts) == 3 and len(sampled) == 16:  # trace-span-parent without the sampling state
        sampled, parent_hex = "", parts[2]
    valid = (len(trace_hex) in (16, 32) and _is_hex(trace_hex) and len(span_hex) == 16 and _is_hex(span_hex)
             and sampled in ("", "0", "1", "d") and (parent_hex == "" or (len(parent_hex) == 16
                                                                          and _is_hex(parent_hex))))
    if not valid:
        log.warning("b3 single header invalid; ignoring.")
        return ExtractedContext(), True
    ctx = ExtractedContext(trace_id=bytes.fromhex(trace_hex), span_id=bytes.fromhex(span_hex),
                           parent_id=bytes.fromhex(parent_hex) if parent_hex else None)
    if sampled in ("1", "d"):
        ctx.should_sample, ctx.flags = True, ("1" if sampled == "d" else None)
    elif sampled == "0":
        ctx.should_sample = False
    return ctx, False


def _b3_id(headers: Mapping[str, str], name: str, sizes: tuple[int, ...]) -> tuple[bytes | None, bool]:
    value = headers.get(name)
    if value is None:
        return None, False
    if len(value) not in sizes or not _is_hex(value):
        log.warning("%s header invalid; ignoring.", name)
        return None, True
    return bytes.fromhex(value), False


def extract_b3(headers: Mapping[str, str]) -> ExtractedContext | None:
    """``b3`` single header (or ``tracestate: b3=...``) first, then the multi-header form (§6)."""
    names = ("b3", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")
    if not any(headers.get(n) is not None for n in names):
        return None
    out = ExtractedContext()
    single = headers.get("b3")
    if single is None and (state := headers.get("tracestate")) and state.startswith("b3="):
        single = state[3:]
    if single is not None:
        ctx, invalid = _b3_single(single)
        out.single_header, out.should_sample, out.flags = True, ctx.should_sample, ctx.flags
        if not invalid:
            out.trace_id, out.span_id, out.parent_id = ctx.trace_id, ctx.span_id, ctx.parent_id
    sampled_header = headers.get("x-b3-sampled")
    multi_sample: bool | None = None
    if sampled_header in ("1", "true"):
        multi_sample = True
    elif sampled_header in ("0", "false"):
        multi_sample = False
    elif sampled_header is not None:
        log.warning("x-b3-sampled header invalid; ignoring.")
    debug = headers.get("x-b3-flags")
    if debug == "1":
        multi_sample = True
    elif debug is not None:
        log.warning("x-b3-flags header invalid; ignoring.")
    trace_id, bad_trace = _b3_id(headers, "x-b3-traceid", (16, 32))
    span_id, bad_span = _b3_id(headers, "x-b3-spanid", (16,))
    parent_id, bad_parent = _b3_id(headers, "x-b3-parentspanid", (16,))
    if out.should_sample is None:
        out.should_sample = multi_sample
    out.flags = out.flags or debug
    if not (bad_trace or bad_span or bad_parent):
        out.trace_id = out.trace_id or trace_id
        out.span_id = out.span_id or span_id
        out.parent_id = out.parent_id or parent_id
    if out.trace_id is None:
        out.span_id = out.parent_id = None
    return out


EXTRACTORS = {"w3c": extract_w3c, "b3": extract_b3}
# header_type=preserve extraction order (§6); the simulator implements only b3 and w3c of it
PRESERVE_EXTRACT_ORDER = ("b3", "w3c", "jaeger", "ot", "datadog", "aws", "gcp")


@dataclass(frozen=True)
class PropagationParams:
    extract: tuple[str, ...] | None
    clear: tuple[str, ...] | None
    inject: tuple[str, ...] | None
    default_format: str


def propagation_params(conf: Mapping[str, Any]) -> PropagationParams:
    """``get_plugin_params``: the ``propagation`` record as is when any of extract/clear/inject is set, else the
    deprecated ``header_type`` decides (§6)."""
    prop = conf.get("propagation") or {}
    default_format = prop.get("default_format") or "w3c"
    if any(prop.get(k) is not None for k in ("extract", "clear", "inject")):
        def field_of(key: str) -> tuple[str, ...] | None:
            return tuple(prop[key]) if prop.get(key) is not None else None
        return PropagationParams(extract=field_of("extract"), clear=field_of("clear"), inject=field_of("inject"),
                                 default_format=default_format)
    header_type = conf.get("header_type") or "preserve"
    extract: tuple[str, ...] | None = PRESERVE_EXTRACT_ORDER
    if header_type == "preserve":
        inject: tuple[str, ...] = ("preserve",)
    elif header_type == "ignore":
        extract, inject = None, (default_format,)
    else:
        inject = ("preserve", header_type)
    return PropagationParams(extract=extract, clear=None, inject=inject, default_format=default_format)


def _hex(raw: bytes) -> str:
    return raw.hex()


@dataclass
class InjectContext:
    trace_id: bytes
    span_id: bytes
    parent_id: bytes | None
    should_sample: bool
    flags: str | None
    single_header: bool
    trace_id_original_size: int | None


def _inject(fmt: str, ctx: InjectContext) -> tuple[dict[str, str], dict[str, str]]:
    """Headers to set and the formatted trace id for one injector (``injectors/*.lua``)."""
    sizes = (16,) if fmt == "w3c" else (16, 8)
    size = ctx.trace_id_original_size if ctx.trace_id_original_size in sizes else sizes[0]
    assert size is not None
    trace_hex = _hex(to_id_size(ctx.trace_id, size) or b"")
    span_hex = _hex(ctx.span_id)
    parent_hex = _hex(ctx.parent_id) if ctx.parent_id else None
    if fmt == "w3c":
        return ({"traceparent": f"00-{trace_hex}-{span_hex}-{'01' if ctx.should_sample else '00'}"},
                {"w3c": trace_hex})
    if fmt == "b3":
        headers = {"x-b3-traceid": trace_hex, "x-b3-spanid": span_hex}
        if parent_hex:
            headers["x-b3-parentspanid"] = parent_hex
        if ctx.flags:
            headers["x-b3-flags"] = ctx.flags
        else:
            headers["x-b3-sampled"] = "1" if ctx.should_sample else "0"
        return headers, {"b3": trace_hex}
    if fmt == "b3-single":
        sampled = "d" if ctx.flags == "1" else ("1" if ctx.should_sample else "0")
        value = f"{trace_hex}-{span_hex}-{sampled}" + (f"-{parent_hex}" if parent_hex else "")
        return {"b3": value}, {"b3": trace_hex}
    raise ValueError(f"injector {fmt!r} is not implemented by the Kong simulator")


class UpstreamHeaders(MutableMapping[str, str]):
    """Case-insensitive view of the request headers that go upstream (``kong.service.request.set_header``)."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            key = name.lower()
            if key in self._items:  # repeated headers: keep them comma-joined like a proxy would see them
                value = f"{self._items[key][1]}, {value}"
            self._items[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def lower_items(self) -> dict[str, str]:
        return {key: value for key, (_, value) in self._items.items()}


def propagate(conf: Mapping[str, Any], headers: UpstreamHeaders, tracing: RequestTracing,
              global_sampling_rate: float) -> dict[str, str] | None:
    """The opentelemetry plugin's access phase (``traces.lua`` access + ``propagation.propagate``).

    Extracts incoming context, decides sampling, clears and injects headers into ``headers``. Returns the trace id
    formats for the serializer's ``trace_id`` (§9), or None when nothing was injected.
    """
    params = propagation_params(conf)
    incoming = ExtractedContext()
    extracted_from: str | None = None
    lowered = headers.lower_items()
    for name in params.extract or ():
        extractor = EXTRACTORS.get(name)
        if extractor is None:  # part of Kong's preserve order the simulator does not implement (documented)
            continue
        ctx = extractor(lowered)
        if ctx is not None:  # the first extractor that returns a context wins (b3 does whenever a b3 header exists)
            incoming, extracted_from = ctx, name
            break
    if incoming.trace_id is not None:
        incoming.trace_id_original_size = len(incoming.trace_id)
        incoming.trace_id = to_id_size(incoming.trace_id, 16)

    inject_ctx = _inject_context(conf, incoming, tracing, global_sampling_rate)
    for name in params.clear or ():
        headers.pop(name, None)
    formats: dict[str, str] = {}
    for injector in params.inject or ():
        fmt = injector
        if fmt == "preserve":
            fmt = extracted_from or params.default_format or "w3c"
            if fmt == "b3" and inject_ctx.single_header:
                fmt = "b3-single"
        new_headers, formatted = _inject(fmt, inject_ctx)
        for name, value in new_headers.items():
            headers[name] = value
        formats.update(formatted)
    tracing.trace_id_formats = formats
    return formats or None


def _inject_context(conf: Mapping[str, Any], incoming: ExtractedContext, tracing: RequestTracing,
                    global_sampling_rate: float) -> InjectContext:
    """``get_inject_ctx`` of ``traces.lua`` (§6, §7.1)."""
    root = tracing.root
    propagation_only = root is None
    if root is None:  # tracing off: a dummy root only to propagate; nothing is sampled (§6)
        root = tracing.create_span("root")
        root.propagation_only = True
    parent = tracing.unlinked_balancer or root
    if incoming.trace_id is not None:
        parent.trace_id = incoming.trace_id
        tracing.raw_trace_id = incoming.trace_id
    if incoming.span_id is not None:
        root.parent_id = incoming.span_id
    elif incoming.parent_id is not None:
        root.parent_id = incoming.parent_id
    if propagation_only:
        sampled = False
    else:
        sampled = sampling_decision(incoming.should_sample, tracing.raw_trace_id or root.trace_id,
                                    conf.get("sampling_rate"), global_sampling_rate)
    tracing.should_sample = sampled
    return InjectContext(trace_id=parent.trace_id, span_id=parent.span_id, parent_id=parent.parent_id,
                         should_sample=sampled, flags=incoming.flags, single_header=incoming.single_header,
                         trace_id_original_size=incoming.trace_id_original_size)


def sampling_decision(parent_sampled: bool | None, trace_id: bytes, plugin_rate: float | None,
                      global_rate: float) -> bool:
    """``get_sampling_decision`` (§7.1): an incoming not-sampled flag wins; otherwise the ratio sampler runs on the
    trace id with the plugin's ``sampling_rate`` over ``tracing_sampling_rate`` (incoming ``-01`` does not force)."""
    if parent_sampled is False:
        return False
    rate = plugin_rate if plugin_rate is not None else global_rate
    return sample_trace_id(trace_id, rate)


# ---------------------------------------------------------------------------------------------------------------
# OTLP encoding (§3)

def _any_value(key: str | None, value: Any) -> AnyValue:
    if key == "http.status_code" and isinstance(value, int | float):
        return AnyValue(int_value=int(value))  # the only int attribute (§3)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int | float):
        return AnyValue(double_value=float(value))  # every other Lua number is a double (§3)
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
    """Defaults merged under ``config.resource_attributes`` (§3)."""
    return {"service.name": "kong", "service.instance.id": node_id, "service.version": KONG_VERSION,
            **dict(configured or {})}


def encode_traces(spans: Iterable[PbSpan], resource: Mapping[str, str]) -> bytes:
    """One resource_spans -> one scope_spans (kong-internal 0.1.0) -> N spans (§3)."""
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
# the export queue (§4)

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
            headers["Content-Type"] = "application/x-protobuf"  # added unless the user set one (§4)
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
        if response.status_code != 200:  # only 200 is success (§4)
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
