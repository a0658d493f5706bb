"""The journal: the client-side facts of a run, recorded while the suites run and played back by ``otelgate replay``.

The sink's dump holds what the pipeline delivered; the journal holds what only the client knew: each ``send()``
(path, statuses, X-Kong-Request-Id values, start/end clock) and each clock reading a claim took
(:func:`otelgate.traffic.now_ns`). Entries are grouped in *segments*, one per test call and one per fixture set-up
(``fixture:warm_stack@`` for the session's warm-up), so a replay can serve each test exactly its own facts in order,
whichever tests it runs.

Replay also uses the entries' times as a *horizon*: while a claim waits between two journal events, the replayed sink
shows only what had arrived by the next event (items' ``received_at``), as the real sink did at that point.

JSON shape, stored under ``"otelgate_journal"`` in a dump file written by :mod:`otelgate.reports.artifacts`::

    {"version": 1, "tests": [nodeid, ...], "outcomes": {nodeid: {"outcome", "cause", "when"}},
     "stack": {"name", "kong_deployment_name"},
     "segments": {key: {"started_ns", "ended_ns", "entries": [{"kind": "clock", "at"} |
                                                              {"kind": "send", "at", "path", "count", "traffic"}]}}}
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from otelgate.traffic import Traffic

JOURNAL_KEY = "otelgate_journal"
JOURNAL_VERSION = 1
OUTSIDE = "<outside any test>"


class ReplayMismatch(RuntimeError):
    """The code under replay asked for something other than what the recording holds (not a pipeline failure)."""


class _Segments:
    """Which segment is current (segments nest: a fixture set up inside a test's set-up)."""

    def __init__(self) -> None:
        self._stack: list[str] = []

    @property
    def current(self) -> str:
        return self._stack[-1] if self._stack else OUTSIDE

    @contextlib.contextmanager
    def segment(self, key: str) -> Iterator[None]:
        self._stack.append(key)
        self._entered(key)
        try:
            yield
        finally:
            self._left(key)
            self._stack.pop()
            if self._stack:
                self._resumed(self._stack[-1])

    def _entered(self, key: str) -> None: ...

    def _left(self, key: str) -> None: ...

    def _resumed(self, key: str) -> None: ...


class Recorder(_Segments):
    """Records the journal of a real run (installed as :data:`otelgate.traffic.journal`)."""

    def __init__(self, clock: Callable[[], int]) -> None:
        super().__init__()
        self._clock = clock
        self.segments: dict[str, dict[str, Any]] = {}

    def _entered(self, key: str) -> None:
        # a key entered again (a re-run) starts over: the latest recording is the one a dump matches
        self.segments[key] = {"started_ns": self._clock(), "ended_ns": None, "entries": []}

    def _left(self, key: str) -> None:
        self.segments[key]["ended_ns"] = self._clock()

    def _append(self, entry: dict[str, Any]) -> None:
        key = self.current
        if key not in self.segments:
            self.segments[key] = {"started_ns": entry["at"], "ended_ns": None, "entries": []}
        self.segments[key]["entries"].append(entry)

    # --- otelgate.traffic.Journal ------------------------------------------------------------------------------

    def clock(self, read: Callable[[], int]) -> int:
        value = read()
        self._append({"kind": "clock", "at": value})
        return value

    def traffic(self, path: str, count: int, perform: Callable[[], Traffic]) -> Traffic:
        result = perform()
        self._append({"kind": "send", "at": result.started_ns, "path": path, "count": count,
                      "traffic": dataclasses.asdict(result)})
        return result

    # --- queries ------------------------------------------------------------------------------------------------

    def request_ids_between(self, start_ns: int, end_ns: int) -> list[str]:
        """X-Kong-Request-Id values of every send that started in [start_ns, end_ns]."""
        return [rid for segment in self.segments.values() for entry in segment["entries"]
                if entry["kind"] == "send" and start_ns <= entry["at"] <= end_ns
                for rid in entry["traffic"]["request_ids"]]

    def to_json(self) -> dict[str, Any]:
        segments = {key: {**value, "entries": list(value["entries"])} for key, value in self.segments.items()}
        return {"version": JOURNAL_VERSION, "segments": segments}


class Player(_Segments):
    """Plays a recorded journal back: ``send()`` and the claims' clock return the recorded values in order.

    ``on_horizon(ns)`` is called whenever the point in recorded time moves (entering a segment, consuming an
    entry); ``ns`` is the time of the next recorded event, or the segment's end.
    """

    def __init__(self, journal: Mapping[str, Any], on_horizon: Callable[[int | None], None]) -> None:
        super().__init__()
        if journal.get("version") != JOURNAL_VERSION:
            raise ReplayMismatch(f"journal version {journal.get('version')!r} is not {JOURNAL_VERSION}")
        self.segments: Mapping[str, Any] = journal.get("segments") or {}
        self._on_horizon = on_horizon
        self._positions: dict[str, int] = {}

    def has_segment(self, key: str) -> bool:
        return key in self.segments

    def _entered(self, key: str) -> None:
        self._positions[key] = 0
        self._on_horizon(self.horizon())

    def _resumed(self, key: str) -> None:
        self._on_horizon(self.horizon())

    def horizon(self) -> int | None:
        """Recorded time of the next event in the current segment (its end once all entries are consumed)."""
        segment = self.segments.get(self.current)
        if segment is None:
            return None
        entries = segment["entries"]
        position = self._positions.get(self.current, 0)
        if position < len(entries):
            return int(entries[position]["at"])
        ended = segment.get("ended_ns")
        return int(ended) if ended is not None else None

    def _next(self, kind: str, what: str) -> Mapping[str, Any]:
        key = self.current
        segment = self.segments.get(key)
        if segment is None:
            raise ReplayMismatch(f"{what} in {key!r}, which the recording does not have")
        position = self._positions.get(key, 0)
        entries = segment["entries"]
        if position >= len(entries):
            raise ReplayMismatch(f"{what} in {key!r}, but the recording of it ends after {len(entries)} event(s) "
                                 "(the code changed since the recording?)")
        entry = entries[position]
        if entry["kind"] != kind:
            raise ReplayMismatch(f"{what} in {key!r}, but event {position} of the recording is a {entry['kind']}")
        self._positions[key] = position + 1
        self._on_horizon(self.horizon())
        return entry

    # --- otelgate.traffic.Journal ------------------------------------------------------------------------------

    def clock(self, read: Callable[[], int]) -> int:
        return int(self._next("clock", "a clock reading")["at"])

    def traffic(self, path: str, count: int, perform: Callable[[], Traffic]) -> Traffic:
        entry = self._next("send", f"send({path!r}, {count})")
        if entry["path"] != path or int(entry["count"]) != count:
            raise ReplayMismatch(f"send({path!r}, {count}) in {self.current!r}, but the recording sent "
                                 f"{entry['count']} x {entry['path']!r} at this point")
        fields = {f.name for f in dataclasses.fields(Traffic)}
        return Traffic(**{k: v for k, v in entry["traffic"].items() if k in fields})
