"""Spans kept as they arrived: one compact block per accepted request, normalized only when a query reads them.

Ingest (:func:`prepare_spans`) decodes the request (so a malformed body is still a 400), applies Dynatrace's span
rule that decides the answer (end time inside [now - 60 min, now + 10 min]) and records each span's trace id; the
serialized request itself is what is stored (re-serialized without the dropped spans when some were dropped).
:func:`prepare_spans` is a pure function of bytes, so it can run in a worker process (see ``otelgate/sink/workers.py``).

:class:`SpanRing` holds the blocks in arrival order with the cap of the old ring (the oldest spans are evicted first,
counted) and an index trace id -> numbers of the blocks holding its spans, so a trace is found without a scan. Per
span the store keeps its wire bytes plus a 16-byte trace id column; per trace and request, one index entry. A
normalized span dict cost ~2 KB; a Kong-like span costs ~0.2 KB this way. Reads normalize the selected spans on
demand (``otelgate.otlp.normalize_span``), with a small cache of parsed blocks for repeated polls of recent traces.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otelgate.otlp import SpanContext, decode_request, normalize_span, span_blocks, trace_key

_ID_WIDTH = 16
_NO_ID = bytes(_ID_WIDTH)
# parsed blocks kept for repeated reads (a test polling for a trace): bounded by blocks and by spans
CACHE_BLOCKS = 8
CACHE_SPANS = 16_384


@dataclass(frozen=True, slots=True)
class DroppedSpan:
    name: str
    trace_id: str
    end_unix_nano: int


@dataclass(frozen=True, slots=True)
class PreparedSpans:
    """What ingest keeps of one traces request (picklable: it may come back from a worker process)."""

    raw: bytes | None  # the serialized request to store; None = the body as received
    count: int  # spans to store
    # trace id per stored span: 16 bytes each (all zero = none), or the keys themselves when an id is not 16 bytes
    trace_ids: bytes | tuple[str, ...]
    keys: tuple[str, ...]  # the distinct trace keys, in order of first appearance
    dropped: int = 0
    example: DroppedSpan | None = None  # the first dropped span, for the rejection message


def prepare_spans(body: bytes, earliest_ns: int | None, latest_ns: int | None) -> PreparedSpans:
    """Decode a protobuf traces request and apply the end-time window (None = no window: the otlp profile).

    Raises ``OtlpDecodeError`` for a body that is not an ExportTraceServiceRequest.
    """
    request = decode_request("traces", body, "protobuf")
    ids: list[bytes] = []
    dropped, example = 0, None
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            if earliest_ns is not None and latest_ns is not None and spans:
                ends = [s.end_time_unix_nano for s in spans]
                if min(ends) < earliest_ns or max(ends) > latest_ns:
                    gone = _drop_outside(spans, ends, earliest_ns, latest_ns)
                    if example is None:
                        example = DroppedSpan(gone[0].name, trace_key(gone[0].trace_id), gone[0].end_time_unix_nano)
                    dropped += len(gone)
            ids += [s.trace_id for s in spans]
    if set(map(len, ids)) <= {_ID_WIDTH}:
        distinct = dict.fromkeys(ids)
        trace_ids: bytes | tuple[str, ...] = b"".join(ids)
        keys = tuple(trace_key(trace_id) for trace_id in distinct)
    else:
        trace_ids = tuple(trace_key(trace_id) for trace_id in ids)
        keys = tuple(dict.fromkeys(trace_ids))
    raw = request.SerializeToString() if dropped else None
    return PreparedSpans(raw, len(ids), trace_ids, keys, dropped, example)


def _drop_outside(spans: Any, ends: list[int], earliest_ns: int, latest_ns: int) -> list[Any]:
    """Remove the spans whose end lies outside the window from a repeated field; returns the removed ones."""
    inside = [earliest_ns <= end <= latest_ns for end in ends]
    kept = [_copy(s) for s, keep in zip(spans, inside, strict=True) if keep]
    gone = [_copy(s) for s, keep in zip(spans, inside, strict=True) if not keep]
    del spans[:]
    spans.extend(kept)
    return gone


def _copy(message: Any) -> Any:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


# ------------------------------------------------------------------------------------------------ blocks


class CompactBlock:
    """One accepted request's spans as wire bytes; ``start`` = how many of its oldest spans were evicted."""

    __slots__ = ("count", "keys", "number", "raw", "received_at", "start", "trace_ids")

    def __init__(self, number: int, raw: bytes, received_at: float, prepared: PreparedSpans) -> None:
        self.number = number
        self.raw = raw
        self.received_at = received_at
        self.trace_ids = prepared.trace_ids
        self.keys = prepared.keys
        self.count = prepared.count
        self.start = 0

    def positions(self, key: str) -> list[int]:
        """Live positions of the spans of trace ``key`` in this block."""
        if isinstance(self.trace_ids, tuple):
            return [p for p in range(self.start, self.count) if self.trace_ids[p] == key]
        try:
            wanted = bytes.fromhex(key) if key else _NO_ID
        except ValueError:
            return []
        if len(wanted) != _ID_WIDTH:
            return []
        found, data, offset = [], self.trace_ids, self.start * _ID_WIDTH
        while (offset := data.find(wanted, offset)) >= 0:
            if offset % _ID_WIDTH == 0:
                found.append(offset // _ID_WIDTH)
                offset += _ID_WIDTH
            else:
                offset += 1
        return found

    def parse(self) -> ParsedBlock:
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(self.raw)
        return ParsedBlock(request)


class ParsedBlock:
    """A decoded block; a span is wrapped as a Python object only when a read asks for it."""

    def __init__(self, request: Any) -> None:
        self.request = request  # keeps the repeated fields below alive
        self.groups: list[tuple[Any, SpanContext]] = []  # (repeated spans, context) per ScopeSpans
        self.starts: list[int] = []  # position of each group's first span
        self.count = 0
        for context, spans in span_blocks(request):
            self.groups.append((spans, context))
            self.starts.append(self.count)
            self.count += len(spans)

    def span(self, position: int) -> tuple[Any, SpanContext]:
        group = bisect.bisect_right(self.starts, position) - 1
        spans, context = self.groups[group]
        return spans[position - self.starts[group]], context


class DictBlock:
    """Spans that arrived already normalized (``POST /api/load``)."""

    __slots__ = ("count", "items", "keys", "number", "start")

    def __init__(self, number: int, items: list[dict[str, Any]]) -> None:
        self.number = number
        self.items = items
        self.keys = tuple(dict.fromkeys(str(item["trace_id"]) for item in items))
        self.count = len(items)
        self.start = 0

    def positions(self, key: str) -> list[int]:
        return [p for p in range(self.start, self.count) if str(self.items[p]["trace_id"]) == key]


Block = CompactBlock | DictBlock


class _ParsedCache:
    """Recently parsed compact blocks (LRU), bounded by block count and by span count; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, ParsedBlock] = OrderedDict()
        self._spans = 0

    def get(self, block: CompactBlock) -> ParsedBlock:
        with self._lock:
            entry = self._entries.get(block.number)
            if entry is not None:
                self._entries.move_to_end(block.number)
                return entry
        entry = block.parse()
        if entry.count > CACHE_SPANS:
            return entry
        with self._lock:
            if block.number not in self._entries:
                self._entries[block.number] = entry
                self._spans += entry.count
            while len(self._entries) > CACHE_BLOCKS or self._spans > CACHE_SPANS:
                _number, old = self._entries.popitem(last=False)
                self._spans -= old.count
        return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._spans = 0


# (name, service) a span must have to be worth normalizing; None = any
SpanKeep = tuple[str | None, str | None]


def materialize(block: Block, positions: Sequence[int], cache: _ParsedCache,
                keep: SpanKeep = (None, None)) -> list[dict[str, Any]]:
    name, service = keep
    if isinstance(block, DictBlock):
        return [block.items[p] for p in positions]
    parsed = cache.get(block)
    received_at = block.received_at
    spans = [parsed.span(p) for p in positions]
    if name is not None or service is not None:  # cheap checks on the message before building the dict
        spans = [(span, context) for span, context in spans
                 if (name is None or span.name == name) and (service is None or context[0] == service)]
    return [normalize_span(span, context, received_at) for span, context in spans]


# ------------------------------------------------------------------------------------------------ the ring


Selection = list[tuple[Block, list[int]]]  # blocks and the positions to read from each, in arrival order


class SpanRing:
    """Spans in arrival order, at most ``cap``, indexed by trace id. Not thread-safe: the Store locks around it.

    The index maps a trace id to the numbers of the blocks holding its spans (one entry per request, not per span);
    where in a block the spans are is found when the trace is read, in the block's 16-byte id column. Eviction
    advances the oldest block's ``start`` and drops a block (and its index entries) once all its spans are gone.

    Reads come in two steps so the Store can release its lock before normalizing: ``select_*`` picks the spans
    (under the lock; blocks never change after they are added, only ``start`` grows), :meth:`read` normalizes them.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._blocks: dict[int, Block] = {}
        self._oldest = 0  # number of the oldest live block
        self._next = 0
        self._size = 0
        self._index: dict[str, list[int]] = {}
        self._cache = _ParsedCache()

    def __len__(self) -> int:
        return self._size

    def add_compact(self, raw: bytes, received_at: float, prepared: PreparedSpans) -> int:
        """Store a prepared request; returns how many spans the cap evicted."""
        if not prepared.count:
            return 0
        return self._add(CompactBlock(self._next, prepared.raw or raw, received_at, prepared))

    def add_dicts(self, items: list[dict[str, Any]]) -> int:
        return self._add(DictBlock(self._next, items)) if items else 0

    def _add(self, block: Block) -> int:
        self._next += 1
        self._blocks[block.number] = block
        index, number = self._index, block.number
        for key in block.keys:
            bucket = index.get(key)
            if bucket is None:
                index[key] = [number]
            else:
                bucket.append(number)
        self._size += block.count
        return self._evict(self._size - self.cap) if self._size > self.cap else 0

    def _evict(self, excess: int) -> int:
        """Evict the ``excess`` oldest spans; a block leaves the index once all of its spans are evicted."""
        remaining = excess
        while remaining:
            block = self._blocks[self._oldest]
            take = min(remaining, block.count - block.start)
            block.start += take
            remaining -= take
            if block.start == block.count:
                for key in block.keys:
                    bucket = self._index[key]
                    bucket.remove(block.number)  # the oldest entry: first in the list
                    if not bucket:
                        del self._index[key]
                del self._blocks[self._oldest]
                self._oldest += 1
        self._size -= excess
        return excess

    def clear(self) -> None:
        self._blocks.clear()
        self._index.clear()
        self._oldest = self._next
        self._size = 0
        self._cache.clear()

    # ------------------------------------------------------------------ reads

    def select_trace(self, key: str) -> Selection:
        selection = [(block, block.positions(key)) for block in (self._blocks[n] for n in self._index.get(key, ()))]
        return [(block, positions) for block, positions in selection if positions]

    def select_all(self, raw_filter: Callable[[bytes], bool] | None = None) -> Selection:
        """Every live span; ``raw_filter`` may skip a compact block by its bytes (a necessary condition only)."""
        return [(block, list(range(block.start, block.count))) for block in self._blocks.values()
                if raw_filter is None or not isinstance(block, CompactBlock) or raw_filter(block.raw)]

    def trace_keys(self) -> list[str]:
        return list(self._index)

    def read(self, selection: Selection, keep: SpanKeep = (None, None)) -> list[dict[str, Any]]:
        """The selected spans, normalized; ``keep`` = (name, service) skips others early (callers filter again)."""
        out: list[dict[str, Any]] = []
        for block, positions in selection:
            out.extend(materialize(block, positions, self._cache, keep))
        return out


def raw_contains_all(needles: Iterable[bytes]) -> Callable[[bytes], bool]:
    wanted = [n for n in needles if n]
    return lambda raw: all(n in raw for n in wanted)
