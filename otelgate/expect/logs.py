"""Log assertions over normalized log records: Kong access logs (tcp-log lines parsed by the collector) carry a
clean ``trace_id`` — 32 lowercase hex, non-zero, not a map, not prefixed — equal to the LogRecord trace id, and it
joins a stored trace whose root ``kong.request.id`` is the line's ``request.id``.

Attributes may be nested (``{"request": {"id": ...}}``, as the collector sends them) or flattened to dotted keys
(``{"request.id": ...}``, as Dynatrace stores them and the fake Dynatrace sink returns them); both are read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from otelgate.expect.errors import Evidence, ExpectationFailed, require

LogRecord = Mapping[str, Any]
CLEAN_TRACE_ID = re.compile(r"[0-9a-f]{32}")
ZERO_TRACE_ID = "0" * 32


def attribute(record: LogRecord, dotted: str, default: Any = None) -> Any:
    """The attribute at ``dotted`` (e.g. ``request.id``), whether stored flattened or nested."""
    attributes = record.get("attributes", {})
    if dotted in attributes:
        return attributes[dotted]
    node: Any = attributes
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def wrapped_trace_id(record: LogRecord) -> dict[str, Any] | None:
    """Kong's default ``{"w3c": ...}`` map, nested or flattened to ``trace_id.<format>`` keys; None if absent."""
    nested = attribute(record, "trace_id")
    if isinstance(nested, Mapping):
        return dict(nested)
    flattened = {k.split(".", 1)[1]: v for k, v in record.get("attributes", {}).items() if k.startswith("trace_id.")}
    return flattened or None


def is_kong_access_log(record: LogRecord) -> bool:
    """A record parsed from Kong's log serializer (tcp-log): it has ``request.id`` and ``started_at``."""
    return attribute(record, "request.id") is not None and attribute(record, "started_at") is not None


def kong_access_logs(records: Sequence[LogRecord]) -> list[LogRecord]:
    return [r for r in records if is_kong_access_log(r)]


def request_id(record: LogRecord) -> str:
    return str(attribute(record, "request.id"))


def trace_id_problem(value: Any) -> str | None:
    """Why ``value`` is not a clean trace id, or None when it is."""
    if value is None:
        return "no trace_id field"
    if isinstance(value, Mapping):
        return f"trace_id is a map {json.dumps(value)} (Kong's default serializer shape, not unwrapped)"
    if not isinstance(value, str):
        return f"trace_id is a {type(value).__name__}: {value!r}"
    if not CLEAN_TRACE_ID.fullmatch(value):
        return f"trace_id {value!r} is not 32 lowercase hex characters"
    if value == ZERO_TRACE_ID:
        return "trace_id is all zeros"
    return None


def _line(record: LogRecord) -> str:
    trace_attr = wrapped_trace_id(record) or attribute(record, "trace_id")
    return (f"  request.id={attribute(record, 'request.id')} uri={attribute(record, 'request.uri')} "
            f"trace_id attr={json.dumps(trace_attr)} LogRecord.trace_id={record.get('trace_id')!r}")


def assert_clean_trace_ids(records: Sequence[LogRecord], min_records: int = 1) -> None:
    """Every Kong access-log record has a clean ``trace_id`` attribute equal to its LogRecord trace id."""
    access = kong_access_logs(records)
    require("Kong access-log records", access, min_records)
    bad: list[str] = []
    for record in access:
        value = wrapped_trace_id(record) or attribute(record, "trace_id")
        problem = trace_id_problem(value)
        if problem is None and record.get("trace_id") != value:
            problem = "LogRecord.trace_id differs from the trace_id attribute"
        if problem:
            bad.append(f"{problem}\n{_line(record)}")
    if bad:
        wrapped = sum(1 for b in bad if "is a map" in b)
        cause = "WRAPPED_TRACE_ID" if wrapped else "UNCLEAN_TRACE_ID"
        raise ExpectationFailed(cause, f"{len(bad)} of {len(access)} access-log record(s) lack a clean trace_id",
                                "\n".join(bad[:10]), Evidence(expected=len(access), seen=len(access) - len(bad),
                                                              facts={"wrapped_trace_ids": wrapped,
                                                                     "unclean_trace_ids": len(bad) - wrapped}))


def assert_joins_traces(records: Sequence[LogRecord], spans: Sequence[Mapping[str, Any]]) -> None:
    """Each access-log record's trace id names a stored trace whose Kong root has the same request id."""
    access = kong_access_logs(records)
    require("Kong access-log records", access)
    roots = {s["trace_id"]: s for s in spans if s["name"] == "kong"}
    by_request = {s.get("attributes", {}).get("kong.request.id"): s for s in roots.values()}
    unjoined: list[str] = []
    elsewhere = 0  # the request's trace is stored, under another id than the log names
    for record in access:
        root = roots.get(str(record.get("trace_id")))
        own = by_request.get(request_id(record))
        elsewhere += own is not None and own["trace_id"] != record.get("trace_id")
        if root is None:
            where = f"; its Kong root is stored as trace {own['trace_id']}" if own is not None else ""
            unjoined.append(f"no stored Kong trace with this id{where}\n{_line(record)}")
        elif root.get("attributes", {}).get("kong.request.id") != request_id(record):
            unjoined.append(f"trace root has kong.request.id={root['attributes'].get('kong.request.id')}\n"
                            f"{_line(record)}")
    if unjoined:
        raise ExpectationFailed("LOG_TRACE_JOIN", f"{len(unjoined)} access-log record(s) do not join a trace",
                                "\n".join(unjoined[:10]),
                                Evidence(expected=len(access), seen=len(access) - len(unjoined),
                                         facts={"unjoined": len(unjoined), "trace_stored_under_other_id": elsewhere}))


def assert_one_record_per_request(records: Sequence[LogRecord], request_ids: Sequence[str]) -> None:
    """Exactly one access-log record for each request id the client saw, and none extra."""
    require("requests sent", list(request_ids))
    seen = [request_id(r) for r in kong_access_logs(records)]
    wanted = set(request_ids)
    missing = sorted(wanted - set(seen))
    duplicates = sorted({rid for rid in seen if seen.count(rid) > 1 and rid in wanted})
    if missing or duplicates:
        raise ExpectationFailed("LOG_COUNT_MISMATCH",
                                f"{len(request_ids)} requests sent; missing {len(missing)} record(s), "
                                f"{len(duplicates)} duplicated",
                                f"  missing: {missing[:10]}\n  duplicated: {duplicates[:10]}",
                                Evidence(expected=len(wanted), seen=len(wanted) - len(missing),
                                         facts={"duplicated": len(duplicates)}))
