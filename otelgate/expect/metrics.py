"""Metric assertions over normalized points (see docs/interfaces.md): DELTA temporality, contiguous windows per
series, request counts that match the traffic sent, the deployment attribute, and no rejections at the sink."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otelgate.expect.errors import Evidence, ExpectationFailed, Rejection, require

Point = Mapping[str, Any]
AGGREGATED_TYPES = ("sum", "histogram", "exponential_histogram")


def series_key(point: Point) -> str:
    """Name, point attributes and the resource identity: one key per time series."""
    resource = point.get("resource", {})
    identity = {k: resource.get(k) for k in ("service.name", "service.instance.id") if k in resource}
    return json.dumps([point["name"], point.get("attributes", {}), identity], sort_keys=True, default=str)


def _describe(point: Point) -> str:
    value = point.get("value", point.get("count"))
    return (f"{point['name']}{json.dumps(point.get('attributes', {}), sort_keys=True)} type={point.get('type')} "
            f"temporality={point.get('temporality')} value={value} "
            f"window=[{point.get('start_unix_nano')}, {point.get('time_unix_nano')}]")


def describe_points(points: Iterable[Point], limit: int = 15) -> str:
    points = list(points)
    lines = [f"  {_describe(p)}" for p in points[:limit]]
    if len(points) > limit:
        lines.append(f"  ... and {len(points) - limit} more")
    return "\n".join(lines)


def must_be_delta(point: Point) -> bool:
    """Monotonic sums and histograms must be DELTA for Dynatrace. Gauges carry no temporality, and a cumulative
    non-monotonic sum (an UpDownCounter) is accepted as a gauge
    (docs/reference/dynatrace-otlp.md#metric-temporality-rules)."""
    if point.get("type") == "sum":
        return point.get("monotonic") is not False
    return point.get("type") in AGGREGATED_TYPES


def assert_all_delta(points: Sequence[Point], min_points: int = 1) -> None:
    """Every point that Dynatrace requires as DELTA (monotonic sums, histograms) is DELTA.

    What it adds beyond the sink's rejection check (:func:`assert_no_rejections`): the Dynatrace-profile sink, like
    Dynatrace, rejects such cumulative points and never stores them, so against it this check sees only DELTA points
    and fails only on missing data (it refuses to pass without ``min_points`` aggregated points). It is the check
    that catches CUMULATIVE points where nothing rejects them: the sink's plain ``otlp`` profile, a dump of another
    backend under ``otelgate replay``, or your own tests on collector output. The negative control for a missing
    ``cumulative_to_delta`` therefore expects ``SINK_REJECTIONS`` with Dynatrace's reason, not this cause.
    """
    aggregated = [p for p in points if must_be_delta(p)]
    require("sum/histogram points", aggregated, min_points)
    cumulative = [p for p in aggregated if p.get("temporality") != "DELTA"]
    if cumulative:
        names = sorted({p["name"] for p in cumulative})
        raise ExpectationFailed("CUMULATIVE_POINTS", f"{len(cumulative)} point(s) are not DELTA: {', '.join(names)}",
                                describe_points(cumulative))


def assert_contiguous_windows(points: Sequence[Point], min_points: int = 2) -> None:
    """Per series, consecutive DELTA windows neither overlap nor leave a gap (start of one == end of previous)."""
    by_series: dict[str, list[Point]] = {}
    for point in points:
        if point.get("type") in AGGREGATED_TYPES and point.get("temporality") == "DELTA":
            by_series.setdefault(series_key(point), []).append(point)
    require("DELTA points", [p for ps in by_series.values() for p in ps], min_points)
    problems: list[str] = []
    for series in by_series.values():
        series.sort(key=lambda p: int(p["start_unix_nano"]))
        for before, after in itertools.pairwise(series):
            end, start = int(before["time_unix_nano"]), int(after["start_unix_nano"])
            if start < end:
                problems.append(f"overlap: {_describe(before)}  then  {_describe(after)}")
            elif start > end:
                problems.append(f"gap of {(start - end) / 1e9:.3f}s: {_describe(before)}  then  {_describe(after)}")
    if problems:
        raise ExpectationFailed("WINDOWS_NOT_CONTIGUOUS", f"{len(problems)} window problem(s)",
                                "\n".join(problems[:15]))


def attributes_match(point: Point, wanted: Mapping[str, Any]) -> bool:
    attributes = point.get("attributes", {})
    return all(attributes.get(k) == v for k, v in wanted.items())


def select(points: Sequence[Point], name: str, after_ns: int = 0, **attributes: Any) -> list[Point]:
    """Points of one metric whose window ends after ``after_ns`` and whose attributes match."""
    return [p for p in points if p["name"] == name and int(p["time_unix_nano"]) > after_ns
            and attributes_match(p, attributes)]


def delta_total(points: Sequence[Point], field: str = "value") -> float:
    """Sum of values (``value`` for sums, ``count`` for histograms). Check temporality first."""
    return sum(float(p.get(field) or 0) for p in points)


def assert_count(points: Sequence[Point], expected: int, field: str, what: str) -> None:
    require(f"points of {what}", points)
    assert_all_delta(points)
    total = delta_total(points, field)
    if total != expected:
        raise ExpectationFailed("COUNT_MISMATCH", f"{what}: sum of deltas is {total:g}, expected {expected}",
                                describe_points(points), Evidence(expected=expected, seen=int(total)))


def assert_attribute_everywhere(points: Sequence[Point], key: str, value: Any = None) -> None:
    """``key`` is present (and equal to ``value`` when given) on every point, as the attributes processor inserts."""
    require("metric points", points)
    missing = [p for p in points if key not in p.get("attributes", {})
               or (value is not None and p["attributes"][key] != value)]
    if missing:
        raise ExpectationFailed("MISSING_ATTRIBUTE", f"{len(missing)} point(s) lack {key}={value!r}",
                                describe_points(missing))


def assert_no_rejections(rejections: Sequence[Mapping[str, Any]], signal: str | None = None) -> None:
    """The sink refused nothing (of ``signal``, or at all)."""
    relevant = [r for r in rejections if signal is None or r.get("signal") in (signal, None)]
    if relevant:
        reasons = sorted({str(r.get("reason")) for r in relevant})
        lines = "\n".join(f"  {r.get('signal')} {r.get('http_status')} {r.get('reason')}: "
                          f"{str(r.get('message'))[:300]}" for r in relevant[:10])
        raise ExpectationFailed("SINK_REJECTIONS", f"the sink rejected {len(relevant)} time(s): {', '.join(reasons)}",
                                lines, Evidence(rejections=tuple(Rejection.from_record(r) for r in relevant),
                                                hop="collector -> sink", collector_reachable=True))


def wait_window_total(
    fetch: Callable[[], Sequence[Point]],
    name: str,
    expected: int,
    field: str,
    after_ns: int,
    timeout: float,
    **attributes: Any,
) -> list[Point]:
    """Poll until the deltas of ``name`` after ``after_ns`` add up to at least ``expected``; return those points."""
    from otelgate.waiting import poll_until

    def observe() -> list[Point]:
        return select(fetch(), name, after_ns, **attributes)

    return poll_until(observe, lambda ps: delta_total(ps, field) >= expected,
                      what=f"deltas of {name}{attributes} to reach {expected}", timeout=timeout, interval=0.5)


# ---------------------------------------------------------------------------------- windows lost to a new bucket

KONG_BUCKET_SOURCE = "Kong/kong@3.9.1 kong/plugins/prometheus/prometheus.lua:607-619"
DROP_SOURCE = ("opentelemetry-collector-contrib@v0.161.0 "
               "processor/cumulativetodeltaprocessor/internal/tracking/tracker.go:202-210")


class HistogramWindowLost(UserWarning):
    """A histogram window the pipeline lost for a known reason, reported, not hidden: Kong exposed a new bucket (a
    bucket exists only once a request landed in it, :data:`KONG_BUCKET_SOURCE`) and cumulative_to_delta dropped the
    point whose bounds changed (:data:`DROP_SOURCE`)."""


@dataclass(frozen=True)
class BucketBirthGap:
    """A gap between two stored windows of one histogram series, explained by a bucket birth, with the requests
    the (contiguous) counter saw inside it."""

    series: str
    born: tuple[float, ...]
    start_ns: int
    end_ns: int
    requests: int

    def describe(self) -> str:
        born = ", ".join(f"le={b:g}" for b in self.born)
        return (f"{self.series}: window [{self.start_ns}, {self.end_ns}] ({(self.end_ns - self.start_ns) / 1e9:.3f}s) "
                f"lost when Kong exposed bucket(s) {born}; the request counter saw {self.requests} request(s) in it "
                f"(buckets appear on first observation: {KONG_BUCKET_SOURCE}; cumulative_to_delta drops the point "
                f"whose bounds changed: {DROP_SOURCE})")


def _bucket_birth(before: Point, after: Point) -> tuple[float, ...]:
    """The bounds ``after`` adds when its bounds strictly extend ``before``'s (empty otherwise)."""
    old = {float(b) for b in before.get("explicit_bounds") or ()}
    new = {float(b) for b in after.get("explicit_bounds") or ()}
    return tuple(sorted(new - old)) if old < new else ()


def _counted_inside(counter: Sequence[Point], start: int, end: int) -> int | None:
    """Requests the counter saw in [start, end], or None unless each counter series that has windows there tiles
    the interval exactly (a window straddling an edge, a gap or an overlap leaves the count unknown)."""
    by_series: dict[str, list[Point]] = {}
    for point in counter:
        window = (int(point["start_unix_nano"]), int(point["time_unix_nano"]))
        if window[1] <= start or window[0] >= end:
            continue
        if window[0] < start or window[1] > end:
            return None
        by_series.setdefault(series_key(point), []).append(point)
    if not by_series:
        return None
    for series in by_series.values():
        series.sort(key=lambda p: int(p["start_unix_nano"]))
        edges = [start] + [e for p in series for e in (int(p["start_unix_nano"]), int(p["time_unix_nano"]))] + [end]
        if any(a != b for a, b in zip(edges[::2], edges[1::2], strict=True)):
            return None
    return int(delta_total([p for ps in by_series.values() for p in ps]))


def histogram_gaps(histogram: Sequence[Point], counter: Sequence[Point],
                   since_ns: int = 0) -> tuple[list[BucketBirthGap], list[str]]:
    """The gaps between consecutive windows of each histogram series: those explained by a bucket birth (the next
    point's bounds strictly extend the previous one's and the counter covers the gap exactly), and a description
    of every other gap. ``counter`` holds the request counter's points of the same label set (all status codes);
    a gap's requests are those the counter saw in it after ``since_ns`` (the part of the gap a check is about)."""
    by_series: dict[str, list[Point]] = {}
    for point in histogram:
        by_series.setdefault(series_key(point), []).append(point)
    explained: list[BucketBirthGap] = []
    unexplained: list[str] = []
    for series in by_series.values():
        series.sort(key=lambda p: int(p["start_unix_nano"]))
        for before, after in itertools.pairwise(series):
            start, end = int(before["time_unix_nano"]), int(after["start_unix_nano"])
            if end <= start:
                continue
            born = _bucket_birth(before, after)
            counted = _counted_inside(counter, max(start, since_ns), end) if born else None
            if born and counted is not None:
                label = f"{after['name']}{json.dumps(after.get('attributes', {}), sort_keys=True)}"
                explained.append(BucketBirthGap(label, born, start, end, counted))
            else:
                why = ("the counter does not cover it exactly" if born else
                       "bounds did not grow (no bucket birth)")
                unexplained.append(f"gap of {(end - start) / 1e9:.3f}s, {why}: {_describe(before)}  then  "
                                   f"{_describe(after)}")
    return explained, unexplained
