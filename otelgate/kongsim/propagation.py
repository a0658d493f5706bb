"""Kong 3.9's trace context propagation, as the Kong simulator (a TEST DOUBLE, not Kong) reproduces it: the
extractors (w3c, b3), the injectors (w3c, b3, b3-single, preserve), ``header_type`` fallback and the opentelemetry
plugin's access phase (docs/reference/kong-3.9.md#propagation).

``#anchor`` in comments names a section of docs/reference/kong-3.9.md (Kong 3.9.1's facts, with sources).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from otelgate.kongsim.tracing import RequestTracing, sample_trace_id, to_id_size

log = logging.getLogger("otelgate.kongsim.tracing")


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
    """``traceparent`` with version 00, non-zero 32-hex trace id and 16-hex parent id, 2-hex flags (#propagation)."""
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
    """``b3`` single header (or ``tracestate: b3=...``) first, then the multi-header form (#propagation)."""
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
# header_type=preserve extraction order (#propagation); the simulator implements only b3 and w3c of it
PRESERVE_EXTRACT_ORDER = ("b3", "w3c", "jaeger", "ot", "datadog", "aws", "gcp")


@dataclass(frozen=True)
class PropagationParams:
    extract: tuple[str, ...] | None
    clear: tuple[str, ...] | None
    inject: tuple[str, ...] | None
    default_format: str


def propagation_params(conf: Mapping[str, Any]) -> PropagationParams:
    """``get_plugin_params``: the ``propagation`` record as is when any of extract/clear/inject is set, else the
    deprecated ``header_type`` decides (#propagation)."""
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
    formats for the serializer's ``trace_id`` (#serialized-trace-id), or None when nothing was injected.
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
    """``get_inject_ctx`` of ``traces.lua`` (#propagation, #sampling-decision)."""
    root = tracing.root
    propagation_only = root is None
    if root is None:  # tracing off: a dummy root only to propagate; nothing is sampled (#propagation)
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
    """``get_sampling_decision`` (#sampling-decision): an incoming not-sampled flag wins; otherwise the ratio
    sampler runs on the trace id with the plugin's ``sampling_rate`` over ``tracing_sampling_rate`` (incoming
    ``-01`` does not force)."""
    if parent_sampled is False:
        return False
    rate = plugin_rate if plugin_rate is not None else global_rate
    return sample_trace_id(trace_id, rate)


