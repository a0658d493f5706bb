"""The sink's memory: normalized spans, metric points and log records, rejections and per-signal counters.

Each collection is a ring with a cap: when full, the oldest item is evicted and counted in ``dropped_for_cap``
(never silently). Spans are indexed by trace id, metric points by name, logs by the trace id they link to, so the
common queries do not scan; other filters scan once (linear, never quadratic).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from otelgate.otlp import SIGNALS
from otelgate.sink.spanstore import PreparedSpans, SpanRing, raw_contains_all

DUMP_VERSION = 1
_STAT_KEYS = ("requests", "accepted_requests", "items", "rejected_items", "bytes", "dropped_for_cap")


class IndexedRing:
    """Items in arrival order, at most ``cap``, with one key index. Evicts the oldest; returns how many."""

    def __init__(self, cap: int, key: Callable[[dict[str, Any]], str]) -> None:
        self.cap = cap
        self._key = key
        self._items: deque[dict[str, Any]] = deque()
        self._index: dict[str, deque[dict[str, Any]]] = {}

    def extend(self, items: Iterable[dict[str, Any]]) -> int:
        index, key, ring = self._index, self._key, self._items
        for item in items:
            ring.append(item)
            bucket = index.get(key(item))
            if bucket is None:
                index[key(item)] = deque((item,))
            else:
                bucket.append(item)
        evicted = 0
        while len(ring) > self.cap:
            old = ring.popleft()
            old_key = key(old)
            bucket = index[old_key]
            bucket.popleft()  # items leave in arrival order, so the oldest of its key is first
            if not bucket:
                del index[old_key]
            evicted += 1
        return evicted

    def by_key(self, value: str) -> list[dict[str, Any]]:
        return list(self._index.get(value, ()))

    def index_keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self._index.clear()


def _empty_stats() -> dict[str, dict[str, int]]:
    return {signal: dict.fromkeys(_STAT_KEYS, 0) for signal in SIGNALS}


def attribute_matches(value: Any, wanted: str) -> bool:
    """Query strings against attribute values of any JSON type (``true``, ``200``, ``GET``)."""
    if isinstance(value, str):
        return value == wanted
    if isinstance(value, bool | int | float):
        return json.dumps(value) == wanted or str(value) == wanted
    return json.dumps(value, sort_keys=True, separators=(",", ":")) == wanted


def _matches_attrs(record: dict[str, Any], attrs: Mapping[str, str], fallback: str | None = "resource") -> bool:
    for key, wanted in attrs.items():
        own = record.get("attributes", {})
        if key in own:
            if not attribute_matches(own[key], wanted):
                return False
        elif fallback is None or key not in record.get(fallback, {}) or not attribute_matches(
                record[fallback][key], wanted):
            return False
    return True


class Store:
    """Thread-safe: the server's event loop writes, tests in other threads may read through ``SinkServer.store``."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._lock = threading.Lock()
        self.spans = SpanRing(max_items)
        self.metric_points = IndexedRing(max_items, key=lambda p: p["name"])
        self.logs = IndexedRing(max_items, key=lambda r: r.get("linked_trace_id") or r["trace_id"])
        self._collections = {"metrics": self.metric_points, "logs": self.logs}
        self.rejections: deque[dict[str, Any]] = deque(maxlen=max_items)
        self.rejections_dropped_for_cap = 0
        self.stats = _empty_stats()

    # ------------------------------------------------------------------ writes

    def add_spans(self, raw: bytes, received_at: float, prepared: PreparedSpans) -> None:
        """One accepted traces request, kept compact (see ``otelgate/sink/spanstore.py``)."""
        with self._lock:
            evicted = self.spans.add_compact(raw, received_at, prepared)
            stats = self.stats["traces"]
            stats["items"] += prepared.count
            stats["dropped_for_cap"] += evicted

    def add(self, signal: str, items: list[dict[str, Any]]) -> None:
        """Metric points or log records, normalized."""
        with self._lock:
            evicted = self._collections[signal].extend(items)
            stats = self.stats[signal]
            stats["items"] += len(items)
            stats["dropped_for_cap"] += evicted

    def count_request(self, signal: str, raw_bytes: int) -> None:
        with self._lock:
            stats = self.stats[signal]
            stats["requests"] += 1
            stats["bytes"] += raw_bytes

    def count_accepted_request(self, signal: str) -> None:
        with self._lock:
            self.stats[signal]["accepted_requests"] += 1

    def reject(self, records: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for record in records:
                if len(self.rejections) == self.rejections.maxlen:
                    self.rejections_dropped_for_cap += 1
                self.rejections.append(record)
                signal = record.get("signal")
                if signal in self.stats:
                    self.stats[signal]["rejected_items"] += int(record.get("items") or 0)

    def reset(self) -> None:
        with self._lock:
            for collection in self._collections.values():
                collection.clear()
            self.spans.clear()
            self.rejections.clear()
            self.rejections_dropped_for_cap = 0
            self.stats = _empty_stats()

    # ------------------------------------------------------------------ reads

    def find_spans(self, trace_id: str | None = None, service: str | None = None, name: str | None = None,
                   attrs: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            selection = (self.spans.select_trace(trace_id.lower()) if trace_id
                         else self.spans.select_all(_span_prefilter(service, name, attrs)))
        return [
            s for s in self.spans.read(selection, (name, service))
            if (service is None or s["service_name"] == service)
            and (name is None or s["name"] == name)
            and (not attrs or _matches_attrs(s, attrs))
        ]

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            selection = self.spans.select_trace(trace_id.lower())
        return sorted(self.spans.read(selection), key=lambda s: (s["start_unix_nano"], s["end_unix_nano"]))

    def trace_summaries(self) -> list[dict[str, Any]]:
        with self._lock:
            order = self.spans.trace_keys()
            selection = self.spans.select_all()
        groups: dict[str, list[dict[str, Any]]] = {key: [] for key in order}
        for span in self.spans.read(selection):
            groups.setdefault(span["trace_id"], []).append(span)
        return [_summarize(trace_id, spans) for trace_id, spans in groups.items() if spans]

    def find_metric_points(self, name: str | None = None,
                           attrs: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            candidates = self.metric_points.by_key(name) if name else list(self.metric_points)
        return [p for p in candidates if not attrs or _matches_attrs(p, attrs)]

    def find_logs(self, trace_id: str | None = None, attrs: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            candidates = self.logs.by_key(trace_id.lower()) if trace_id else list(self.logs)
        return [r for r in candidates if not attrs or _matches_attrs(r, attrs)]

    def find_rejections(self, signal: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.rejections if signal is None or r.get("signal") == signal]

    def stats_snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {signal: dict(values) for signal, values in self.stats.items()}

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {"spans": len(self.spans), "metric_points": len(self.metric_points), "logs": len(self.logs),
                    "rejections": len(self.rejections), "max_items": self.max_items,
                    "rejections_dropped_for_cap": self.rejections_dropped_for_cap}

    # ------------------------------------------------------------------ dump / load

    def dump(self, profile: str) -> dict[str, Any]:
        with self._lock:
            selection = self.spans.select_all()
            document = {
                "otelgate_dump": DUMP_VERSION,
                "profile": profile,
                "created_at": time.time(),
                "spans": [],
                "metric_points": list(self.metric_points),
                "logs": list(self.logs),
                "rejections": list(self.rejections),
                "stats": {signal: dict(values) for signal, values in self.stats.items()},
            }
        document["spans"] = self.spans.read(selection)  # normalizing is the slow part: outside the lock
        return document

    def load(self, dump: Mapping[str, Any]) -> None:
        """Replace everything with a dump's content (validated first: a bad dump changes nothing)."""
        validate_dump(dump)
        with self._lock:
            for collection in self._collections.values():
                collection.clear()
            self.spans.clear()
            self.spans.add_dicts(list(dump["spans"]))
            self.metric_points.extend(dump["metric_points"])
            self.logs.extend(dump["logs"])
            self.rejections.clear()
            self.rejections.extend(dump["rejections"])
            self.rejections_dropped_for_cap = 0
            stats = _empty_stats()
            for signal, values in (dump.get("stats") or {}).items():
                if signal in stats and isinstance(values, Mapping):
                    stats[signal].update({k: int(v) for k, v in values.items() if k in _STAT_KEYS})
            self.stats = stats


class InvalidDump(ValueError):
    pass


def validate_dump(dump: Any) -> None:
    if not isinstance(dump, Mapping):
        raise InvalidDump("a dump is a JSON object")
    if dump.get("otelgate_dump") != DUMP_VERSION:
        found = dump.get("otelgate_dump")
        raise InvalidDump(f"not an otelgate dump of version {DUMP_VERSION} (otelgate_dump={found!r})")
    required = {"spans": ("trace_id", "span_id", "name"), "metric_points": ("name",),
                "logs": ("trace_id", "attributes"), "rejections": ("reason",)}
    for key, fields in required.items():
        items = dump.get(key)
        if not isinstance(items, list):
            raise InvalidDump(f"dump[{key!r}] must be a list")
        for position, item in enumerate(items):
            if not isinstance(item, Mapping) or any(f not in item for f in fields):
                raise InvalidDump(f"dump[{key!r}][{position}] must be an object with {', '.join(fields)}")


def _could_be_non_string(wanted: str) -> bool:
    """Whether a query value may match a non-string attribute (compared as JSON text, see attribute_matches)."""
    if wanted[:1] in ("[", "{") or wanted in ("true", "false", "True", "False", "null", "None"):
        return True
    try:
        float(wanted)
    except ValueError:
        return False
    return True


def _span_prefilter(service: str | None, name: str | None,
                    attrs: Mapping[str, str] | None) -> Callable[[bytes], bool] | None:
    """Bytes a matching span's request must contain: its name, service and string attribute values appear
    verbatim (UTF-8) in the protobuf encoding. Only a shortcut: every candidate is still checked in full."""
    texts = [t for t in (service, name) if t]
    texts += [v for v in (attrs or {}).values() if v and not _could_be_non_string(v)]
    needles = []
    for text in texts:
        try:
            needles.append(text.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate matches nothing protobuf could carry; filter in full
            return None
    return raw_contains_all(needles) if needles else None


def _summarize(trace_id: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    span_ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if not s["parent_span_id"] or s["parent_span_id"] not in span_ids]
    root = min(roots or spans, key=lambda s: s["start_unix_nano"])
    return {
        "trace_id": trace_id,
        "span_count": len(spans),
        "services": sorted({s["service_name"] for s in spans if s["service_name"]}),
        "root_name": root["name"],
        "root_service": root["service_name"],
        "start_unix_nano": min(s["start_unix_nano"] for s in spans),
        "end_unix_nano": max(s["end_unix_nano"] for s in spans),
    }
