"""Dynatrace's OTLP ingest rules, applied to normalized records (docs/reference/dynatrace-otlp.md: metric, trace and log
ingest rules and #behaviour-matrix).

Each ``apply_*`` function takes the normalized items of one request and returns a :class:`Verdict`: what to store,
what was refused and why (one rejection record per metric and reason), and what to answer in ``partial_success``.
With the ``otlp`` profile nothing is refused; logs still get their ``linkable`` flag.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from otelgate.sink.config import SinkConfig

METRICS_HEADER = "The following issues were encountered while ingesting OTLP metrics:\nErrors:\n"

_METRIC_KEY_INVALID = re.compile(r"[^A-Za-z0-9_.\-]")
_DIMENSION_KEY_INVALID = re.compile(r"[^a-z0-9_.\-]")
_FIRST_LETTER_UPPER_OR_LOWER = re.compile(r"[A-Za-z]")
_FIRST_LETTER_LOWER = re.compile(r"[a-z]")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")

MAX_METRIC_KEY = 255
MAX_DIMENSION_KEY = 100
MAX_DIMENSION_VALUE = 255
MAX_UNIT = 63
MAX_DESCRIPTION = 1023
MAX_FLATTEN_DEPTH = 5


@dataclass
class Verdict:
    accepted: list[dict[str, Any]]
    rejections: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0  # what partial_success reports
    message: str = ""  # partial_success.error_message ("" = none)

    @property
    def refused_items(self) -> int:
        return sum(int(r["items"]) for r in self.rejections)


def rejection(signal: str | None, http_status: int, reason: str, message: str, items: int = 0,
              name: str | None = None) -> dict[str, Any]:
    """A rejection record in the shape of docs/interfaces.md."""
    return {"signal": signal, "http_status": http_status, "reason": reason, "message": message, "items": items,
            "name": name, "at": time.time()}


# --------------------------------------------------------------------------------------------------- metrics


@functools.lru_cache(maxsize=8192)
def normalize_metric_key(name: str) -> str | None:
    """Dynatrace's metric key: invalid characters become `_`, it starts with a letter, 2-255 chars; None = no key."""
    key = _METRIC_KEY_INVALID.sub("_", name)
    first = _FIRST_LETTER_UPPER_OR_LOWER.search(key)
    if first is None:
        return None
    key = key[first.start():MAX_METRIC_KEY + first.start()]
    return key if len(key) >= 2 else key + "_"


@functools.lru_cache(maxsize=8192)
def normalize_dimension_key(key: str) -> str | None:
    """Dynatrace's dimension key: lowercase, invalid characters `_`, starts with a letter, <= 100 chars."""
    lowered = _DIMENSION_KEY_INVALID.sub("_", key.lower())
    first = _FIRST_LETTER_LOWER.search(lowered)
    if first is None:
        return None
    return lowered[first.start():first.start() + MAX_DIMENSION_KEY]


def dimension_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return text[:MAX_DIMENSION_VALUE]


def normalize_dimensions(attributes: dict[str, Any]) -> dict[str, str]:
    """Point attributes as Dynatrace dimensions; a duplicate key after normalisation keeps the first value."""
    out: dict[str, str] = {}
    for key, value in attributes.items():
        dim_key = normalize_dimension_key(key)
        if dim_key is None or dim_key in out:
            continue
        text = dimension_value(value)
        if text:
            out[dim_key] = text
    return out


def _invalid_number(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return None


def _metric_problem(point: dict[str, Any], config: SinkConfig) -> tuple[str, str] | None:
    """(reason, line) when Dynatrace refuses this point, else None."""
    name = point["name"]
    kind = point["type"]
    if kind == "summary":
        return _unsupported(name, "UNSUPPORTED_METRIC_TYPE_SUMMARY")
    if kind == "sum" and point["monotonic"] and point["temporality"] != "DELTA":
        return _unsupported(name, "UNSUPPORTED_METRIC_TYPE_MONOTONIC_CUMULATIVE_SUM")
    if kind in ("histogram", "exponential_histogram") and point["temporality"] != "DELTA":
        # the reason code for cumulative exponential histograms is not known (same as histograms):
        # docs/reference/dynatrace-otlp.md#unknowns, item 8
        return _unsupported(name, "UNSUPPORTED_METRIC_TYPE_CUMULATIVE_HISTOGRAM")
    for field_name in ("value", "sum", "min", "max"):
        bad = _invalid_number(point[field_name])
        if bad is not None:
            return ("VALUE_INVALID",
                    f"Metric value dropped. key: '{name}' details: 'Value was {bad}' - Reason: VALUE_INVALID")
    if kind == "histogram":
        problem = _bucket_problem(point["explicit_bounds"], point["bucket_counts"])
        if problem is not None:
            return ("HISTOGRAM_BUCKET_INVALID",
                    f"Histogram metric dropped. key: '{name}' details: '{problem}' - Reason: HISTOGRAM_BUCKET_INVALID")
    if normalize_metric_key(name) is None:
        return "METRIC_KEY_INVALID", f"Metric dropped: '{name}' - Reason: METRIC_KEY_INVALID"
    if len(normalize_dimensions(point["attributes"])) > config.max_dimensions:
        return "DIMENSION_COUNT_EXCEEDED", f"Metric dropped: '{name}' - Reason: DIMENSION_COUNT_EXCEEDED"
    return None


def _unsupported(name: str, reason: str) -> tuple[str, str]:
    return reason, f"Unsupported metric: '{name}' - Reason: {reason}"


def _bucket_problem(bounds: list[float], counts: list[int]) -> str | None:
    if any(not math.isfinite(b) for b in bounds) or any(b >= a for b, a in itertools.pairwise(bounds)):
        return "Histogram boundaries are not sorted"
    if counts and len(counts) != len(bounds) + 1:
        return "Histogram bucket counts do not match the boundaries"
    return None


def _normalize_accepted_point(point: dict[str, Any]) -> dict[str, Any]:
    point["name"] = normalize_metric_key(point["name"])
    point["attributes"] = normalize_dimensions(point["attributes"])
    if len(point["unit"]) > MAX_UNIT:
        point["unit"] = ""
    point["description"] = point["description"][:MAX_DESCRIPTION]
    return point


def apply_metric_rules(points: list[dict[str, Any]], config: SinkConfig) -> Verdict:
    if not config.is_dynatrace:
        return Verdict(points)
    accepted: list[dict[str, Any]] = []
    problems: dict[tuple[str, str], list[Any]] = {}  # (reason, name) -> [line, count], in order of appearance
    for point in points:
        problem = _metric_problem(point, config)
        if problem is None:
            accepted.append(_normalize_accepted_point(point))
            continue
        reason, line = problem
        entry = problems.setdefault((reason, point["name"]), [line, 0])
        entry[1] += 1
    if not problems:
        return Verdict(accepted)
    rejected = sum(count for _line, count in problems.values())
    message = METRICS_HEADER + "".join(line + "\n" for line, _count in problems.values())
    records = [rejection("metrics", 200, reason, line, count, name)
               for (reason, name), (line, count) in problems.items()]
    return Verdict(accepted, records, rejected, message)


def too_many_points(count: int, config: SinkConfig) -> str:
    return (f"The following issues were encountered while ingesting OTLP metrics:\nErrors:\n"
            f"Request dropped: {count} data points exceed the limit of {config.max_data_points} per request"
            f" - Reason: DATA_POINT_COUNT_EXCEEDED\n")


# ---------------------------------------------------------------------------------------------------- traces


def span_window(config: SinkConfig, now_ns: int | None = None) -> tuple[int, int] | None:
    """[earliest, latest] end time of a span that is persisted (dynatrace-otlp.md#trace-ingest-rules); None = no
    window (otlp profile)."""
    if not config.is_dynatrace:
        return None
    now_ns = time.time_ns() if now_ns is None else now_ns
    return now_ns - int(config.span_past_seconds * 1e9), now_ns + int(config.span_future_seconds * 1e9)


def dropped_spans_verdict(dropped: int, name: str, trace_id: str, end_unix_nano: int,
                          config: SinkConfig) -> tuple[list[dict[str, Any]], int, str]:
    """(rejection records, partial_success count, partial_success message) for spans out of the window."""
    message = (f"{dropped} span(s) not persisted: span end time out of range (must lie within "
               f"{config.span_past_seconds / 60:g} min in the past and {config.span_future_seconds / 60:g} min in "
               f"the future); e.g. span '{name}' trace {trace_id} end_unix_nano {end_unix_nano}")
    record = rejection("traces", 200, "SPAN_END_TIME_OUT_OF_RANGE", message, dropped)
    if config.report_dropped_spans:
        return [record], dropped, message
    return [record], 0, ""


def apply_span_rules(spans: list[dict[str, Any]], config: SinkConfig, now_ns: int | None = None) -> Verdict:
    """Spans whose end time lies outside [now - 60 min, now + 10 min] are not persisted
    (docs/reference/dynatrace-otlp.md#trace-ingest-rules).

    The sink applies the same rule to compact spans (``otelgate/sink/spanstore.py`` ``prepare_spans``); this form
    works on normalized spans.
    """
    window = span_window(config, now_ns)
    if window is None:
        return Verdict(spans)
    earliest, latest = window
    accepted = [s for s in spans if earliest <= s["end_unix_nano"] <= latest]
    dropped = len(spans) - len(accepted)
    if not dropped:
        return Verdict(accepted)
    example = next(s for s in spans if not earliest <= s["end_unix_nano"] <= latest)
    records, rejected, message = dropped_spans_verdict(dropped, example["name"], example["trace_id"],
                                                       example["end_unix_nano"], config)
    return Verdict(accepted, records, rejected, message)


# ------------------------------------------------------------------------------------------------------ logs


def flatten_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Maps become dotted keys (``trace_id: {w3c: x}`` -> ``trace_id.w3c: x``), at most 5 levels deep."""
    if not any(isinstance(v, dict) for v in attributes.values()):
        return attributes
    out: dict[str, Any] = {}
    _flatten_into(out, "", attributes, 1)
    return out


def _flatten_into(out: dict[str, Any], prefix: str, mapping: dict[str, Any], depth: int) -> None:
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and depth < MAX_FLATTEN_DEPTH:
            _flatten_into(out, full + ".", value, depth + 1)
        elif isinstance(value, dict):
            out.setdefault(full, json.dumps(value, sort_keys=True, default=str))
        else:
            out.setdefault(full, value)


def link_target(record: dict[str, Any]) -> str:
    """The trace id Dynatrace would link this record to (rule 19), lowercase hex; "" = not linkable.

    The OTLP ``trace_id`` field wins; otherwise a top-level string attribute ``trace_id`` or ``dt.trace_id`` of 32
    hex characters (any case, not all zero). A map such as ``{"w3c": ...}`` is not linkable.
    """
    if record["trace_id"]:
        return str(record["trace_id"])
    attributes = record["attributes"]
    for key in ("trace_id", "dt.trace_id"):
        value = attributes.get(key)
        if isinstance(value, str) and _HEX32.fullmatch(value) and value.strip("0"):
            return value.lower()
    return ""


def apply_log_rules(records: list[dict[str, Any]], config: SinkConfig, now_ns: int | None = None) -> Verdict:
    now_ns = time.time_ns() if now_ns is None else now_ns
    earliest = now_ns - int(config.log_past_seconds * 1e9)
    latest = now_ns + int(config.log_future_seconds * 1e9)
    accepted: list[dict[str, Any]] = []
    too_old = 0
    for record in records:
        if config.is_dynatrace:
            timestamp = record["time_unix_nano"] or record["observed_time_unix_nano"] or now_ns
            if timestamp < earliest:
                too_old += 1
                continue
            record["time_unix_nano"] = now_ns if timestamp > latest else timestamp
            record["attributes"] = flatten_attributes(record["attributes"])
        target = link_target(record)
        record["linkable"] = bool(target)
        record["linked_trace_id"] = target
        accepted.append(record)
    if not too_old:
        return Verdict(accepted)
    message = (f"{too_old} log record(s) dropped: timestamp older than "
               f"{config.log_past_seconds / 3600:g} h")
    record = rejection("logs", 200, "LOG_TIMESTAMP_OUT_OF_RANGE", message, too_old)
    if config.report_dropped_logs:
        return Verdict(accepted, [record], too_old, message)
    return Verdict(accepted, [record])


def apply_rules(signal: str, items: list[dict[str, Any]], config: SinkConfig) -> Verdict:
    if signal == "traces":
        return apply_span_rules(items, config)
    if signal == "metrics":
        return apply_metric_rules(items, config)
    return apply_log_rules(items, config)
