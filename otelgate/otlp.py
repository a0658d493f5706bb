"""OTLP/HTTP wire format: decode export requests (protobuf or JSON), normalize them to otelgate's JSON shapes
(see docs/interfaces.md), and encode responses and ``google.rpc.Status`` error bodies.

Normalization is the hot path of the sink, so it is written out by hand against the generated messages (upb
runtime) instead of going through ``json_format.MessageToDict``: one pass, no intermediate dicts, resource and scope
maps built once per resource/scope and shared by the records below them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

Signal = Literal["traces", "metrics", "logs"]
Encoding = Literal["protobuf", "json"]
SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")

PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
JSON_CONTENT_TYPE = "application/json"

REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}
_RESPONSE_TYPES: dict[str, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
}
_REJECTED_FIELD = {"traces": "rejected_spans", "metrics": "rejected_data_points", "logs": "rejected_log_records"}

SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")
TEMPORALITIES = ("UNSPECIFIED", "DELTA", "CUMULATIVE")

# OTLP/JSON carries these ids as hex; protobuf's JSON mapping expects base64 for bytes fields.
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


class OtlpDecodeError(ValueError):
    """The request body is not a valid OTLP export request of the expected signal and encoding."""


# --------------------------------------------------------------------------------------------------- decoding


def decode_request(signal: str, body: bytes, encoding: Encoding) -> Message:
    """Parse an (already decompressed) export request. An empty body is an empty request."""
    message = REQUEST_TYPES[signal]()
    if not body:
        return message
    try:
        if encoding == "protobuf":
            message.ParseFromString(body)
        else:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise OtlpDecodeError("the JSON body is not an object")
            json_format.ParseDict(_hex_ids_to_base64(document), message, ignore_unknown_fields=True)
    except OtlpDecodeError:
        raise
    except (DecodeError, json_format.ParseError, ValueError, TypeError, RecursionError, UnicodeError) as exc:
        raise OtlpDecodeError(f"cannot decode the body as an OTLP {signal} {encoding} request: {exc}") from exc
    return message


def _hex_ids_to_base64(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _HEX_ID_KEYS and isinstance(value, str):
                try:
                    out[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError as exc:
                    raise OtlpDecodeError(f"{key} {value[:80]!r} is not hex") from exc
            else:
                out[key] = _hex_ids_to_base64(value)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


# ---------------------------------------------------------------------------------------------- normalization


_SCALAR_KINDS = frozenset({"string_value", "bool_value", "int_value", "double_value"})


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as JSON: str, bool, int, float, list, dict, bytes as hex; None when unset."""
    kind = value.WhichOneof("value")
    if kind in _SCALAR_KINDS:
        return getattr(value, kind)
    if kind is None:
        return None
    return _COMPOSITE_CONVERTERS[kind](value)


def attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    """A repeated KeyValue as a dict; a duplicate key keeps its first value (as the spec allows).

    The scalar case is inlined: attributes are most of the normalization work.
    """
    out: dict[str, Any] = {}
    scalar_kinds = _SCALAR_KINDS
    for kv in key_values:
        key = kv.key
        if key in out:
            continue
        value = kv.value
        kind = value.WhichOneof("value")
        if kind in scalar_kinds:
            out[key] = getattr(value, kind)
        elif kind is None:
            out[key] = None
        else:
            out[key] = _COMPOSITE_CONVERTERS[kind](value)
    return out


_COMPOSITE_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "bytes_value": lambda v: v.bytes_value.hex(),
    "array_value": lambda v: [any_value(item) for item in v.array_value.values],
    "kvlist_value": lambda v: attributes(v.kvlist_value.values),
}


def _scope(scope: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": scope.name, "version": scope.version}
    if len(scope.attributes):
        out["attributes"] = attributes(scope.attributes)
    return out


def _hex_id(raw: bytes) -> str:
    """Lowercase hex of an id; "" when absent or all zero (the OTLP spelling of "no id")."""
    return raw.hex() if raw and raw.count(0) != len(raw) else ""


def _name(names: tuple[str, ...], index: int, fallback: str) -> str:
    return names[index] if 0 <= index < len(names) else fallback


SpanContext = tuple[str | None, dict[str, Any], dict[str, Any]]  # service_name, resource, scope


def span_blocks(request: Any) -> Iterator[tuple[SpanContext, Any]]:
    """(context, repeated spans) per ScopeSpans, in wire order; the context maps are built once and shared."""
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service = resource.get("service.name")
        service_name = service if isinstance(service, str) and service else None
        for scope_spans in resource_spans.scope_spans:
            yield (service_name, resource, _scope(scope_spans.scope)), scope_spans.spans


def normalize_span(span: Any, context: SpanContext, received_at: float) -> dict[str, Any]:
    service_name, resource, scope = context
    status = span.status
    return {
        "trace_id": _hex_id(span.trace_id),
        "span_id": _hex_id(span.span_id),
        "parent_span_id": _hex_id(span.parent_span_id),
        "name": span.name,
        "kind": _name(SPAN_KINDS, span.kind, "UNSPECIFIED"),
        "service_name": service_name,
        "resource": resource,
        "scope": scope,
        "attributes": attributes(span.attributes),
        "status": {"code": _name(STATUS_CODES, status.code, "UNSET"), "message": status.message},
        "start_unix_nano": span.start_time_unix_nano,
        "end_unix_nano": span.end_time_unix_nano,
        "events": [
            {"name": e.name, "time_unix_nano": e.time_unix_nano, "attributes": attributes(e.attributes)}
            for e in span.events
        ],
        "received_at": received_at,
    }


def normalize_spans(request: Any, received_at: float) -> list[dict[str, Any]]:
    return [normalize_span(span, context, received_at)
            for context, spans in span_blocks(request) for span in spans]


def trace_key(raw: bytes) -> str:
    """The store's key for a trace id: what ``trace_id`` of a normalized span holds."""
    return _hex_id(raw)


def count_items(signal: str, request: Any) -> int:
    """Spans, data points or log records in a request, without normalizing it."""
    if signal == "traces":
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    total = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total


def _optional(message: Any, field: str) -> float | None:
    return getattr(message, field) if message.HasField(field) else None


def _point_base(metric: Any, kind: str, point: Any, context: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": metric.name,
        "description": metric.description,
        "unit": metric.unit,
        "type": kind,
        "temporality": context["temporality"],
        "monotonic": context["monotonic"],
        "attributes": attributes(point.attributes),
        "resource": context["resource"],
        "scope": context["scope"],
        "start_unix_nano": point.start_time_unix_nano,
        "time_unix_nano": point.time_unix_nano,
        "value": None,
        "count": None,
        "sum": None,
        "min": None,
        "max": None,
        "bucket_counts": [],
        "explicit_bounds": [],
        "received_at": context["received_at"],
    }


def _number_points(metric: Any, kind: str, data: Any, context: dict[str, Any]) -> list[dict[str, Any]]:
    points = []
    for point in data.data_points:
        record = _point_base(metric, kind, point, context)
        which = point.WhichOneof("value")
        record["value"] = getattr(point, which) if which is not None else None
        points.append(record)
    return points


def _histogram_points(metric: Any, kind: str, data: Any, context: dict[str, Any]) -> list[dict[str, Any]]:
    points = []
    for point in data.data_points:
        record = _point_base(metric, kind, point, context)
        record["count"] = point.count
        record["sum"] = _optional(point, "sum")
        record["min"] = _optional(point, "min")
        record["max"] = _optional(point, "max")
        if kind == "histogram":
            record["bucket_counts"] = list(point.bucket_counts)
            record["explicit_bounds"] = list(point.explicit_bounds)
        points.append(record)
    return points


def _summary_points(metric: Any, kind: str, data: Any, context: dict[str, Any]) -> list[dict[str, Any]]:
    points = []
    for point in data.data_points:
        record = _point_base(metric, kind, point, context)
        record["count"] = point.count
        record["sum"] = point.sum
        points.append(record)
    return points


_POINT_BUILDERS: dict[str, Callable[[Any, str, Any, dict[str, Any]], list[dict[str, Any]]]] = {
    "gauge": _number_points,
    "sum": _number_points,
    "histogram": _histogram_points,
    "exponential_histogram": _histogram_points,
    "summary": _summary_points,
}


def normalize_metrics(request: Any, received_at: float) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for resource_metrics in request.resource_metrics:
        resource = attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = _scope(scope_metrics.scope)
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(metric, kind)
                context = {
                    "resource": resource,
                    "scope": scope,
                    "received_at": received_at,
                    "temporality": (
                        _name(TEMPORALITIES, data.aggregation_temporality, "UNSPECIFIED")
                        if kind in ("sum", "histogram", "exponential_histogram") else None
                    ),
                    "monotonic": data.is_monotonic if kind == "sum" else None,
                }
                points.extend(_POINT_BUILDERS[kind](metric, kind, data, context))
    return points


def normalize_logs(request: Any, received_at: float) -> list[dict[str, Any]]:
    """Log records; ``linkable`` is left for the caller's rules (it depends on the profile)."""
    records: list[dict[str, Any]] = []
    append = records.append
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = _scope(scope_logs.scope)
            for record in scope_logs.log_records:
                trace_id = record.trace_id
                append({
                    "time_unix_nano": record.time_unix_nano,
                    "observed_time_unix_nano": record.observed_time_unix_nano,
                    "severity_number": record.severity_number,
                    "severity_text": record.severity_text,
                    "body": any_value(record.body) if record.HasField("body") else None,
                    "attributes": attributes(record.attributes),
                    "resource": resource,
                    "scope": scope,
                    # only a well-formed id counts: 16 bytes, not all zero (logs.proto)
                    "trace_id": _hex_id(trace_id) if len(trace_id) == 16 else "",
                    "span_id": _hex_id(record.span_id) if len(record.span_id) == 8 else "",
                    "flags": record.flags,
                    "linkable": False,
                    "received_at": received_at,
                })
    return records


NORMALIZERS: dict[str, Callable[[Any, float], list[dict[str, Any]]]] = {
    "traces": normalize_spans,
    "metrics": normalize_metrics,
    "logs": normalize_logs,
}


# -------------------------------------------------------------------------------------------------- encoding


def encode_response(signal: str, encoding: Encoding, rejected: int | None = None, message: str = "") -> bytes:
    """An Export*ServiceResponse; ``partial_success`` is set only when something was rejected or said."""
    response = _RESPONSE_TYPES[signal]()
    if rejected or message:
        partial = response.partial_success  # type: ignore[attr-defined]
        setattr(partial, _REJECTED_FIELD[signal], rejected or 0)
        partial.error_message = message
    if encoding == "json":
        return json_format.MessageToJson(response, indent=None).encode("utf-8")
    return response.SerializeToString()


def decode_response(signal: str, body: bytes, encoding: Encoding = "protobuf") -> tuple[int | None, str]:
    """(rejected count, error message) of a response; ``(None, "")`` when partial_success is unset."""
    response = _RESPONSE_TYPES[signal]()
    if encoding == "json":
        json_format.Parse(body, response)
    else:
        response.ParseFromString(body)
    if not response.HasField("partial_success"):
        return None, ""
    partial = response.partial_success  # type: ignore[attr-defined]
    return int(getattr(partial, _REJECTED_FIELD[signal])), str(partial.error_message)


def encode_status(code: int, message: str, encoding: Encoding = "protobuf") -> bytes:
    """A ``google.rpc.Status`` body, as OTLP/HTTP requires on every 4xx/5xx."""
    status = status_pb2.Status(code=code, message=message)
    if encoding == "json":
        return json_format.MessageToJson(status, indent=None).encode("utf-8")
    return status.SerializeToString()


def decode_status(body: bytes) -> tuple[int, str]:
    status = status_pb2.Status()
    status.ParseFromString(body)
    return status.code, status.message


__all__ = [
    "JSON_CONTENT_TYPE",
    "PROTOBUF_CONTENT_TYPE",
    "SIGNALS",
    "OtlpDecodeError",
    "any_value",
    "attributes",
    "count_items",
    "decode_request",
    "decode_response",
    "decode_status",
    "encode_response",
    "encode_status",
    "normalize_logs",
    "normalize_metrics",
    "normalize_span",
    "normalize_spans",
    "span_blocks",
    "trace_key",
]
