"""The sampling-rate report: what each Kong sampling rate costs and gives, and which rate to choose.

Input is one :class:`RateResult` per measured rate (filled by ``loadtests.sweep``); output is a folder
``<out>/sampling-<timestamp>/`` with ``report.json`` (every figure), ``report.md`` (a table a person reads at a
glance) and three PNG plots (traced fraction with its 95% interval, spans/s, client latency percentiles, each vs
rate). With budgets (spans per second at the backend, p99 latency overhead over the lowest rate), the report
recommends the highest measured rate inside both and names the budget that stops the next rate up.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from otelgate.expect.sampling import traced_fraction

REPORT_FORMAT = 1
PLOTS = {
    "traced_fraction": "traced-fraction.png",
    "spans_per_second": "spans-per-second.png",
    "latency": "latency.png",
}
MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------------ the figures

@dataclass
class Latency:
    """Client-side latency of the successful requests, milliseconds (nearest-rank percentiles)."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None


@dataclass
class CollectorResources:
    """The collector's CPU (percent of one core) and resident memory while the load ran."""

    source: str = "not measured"       # "psutil pid N", "collector self-metrics", or why it was not measured
    samples: int = 0
    cpu_avg_percent: float | None = None
    cpu_max_percent: float | None = None
    rss_avg_mib: float | None = None
    rss_max_mib: float | None = None


@dataclass
class RateResult:
    """Everything measured at one sampling rate."""

    rate: float
    duration_s: float                   # how long locust generated load (measured)
    users: int
    requests_sent: int                  # locust's count (successes and failures)
    requests_failed: int
    requests_with_id: int               # answers carrying X-Kong-Request-Id: the denominator of the fraction
    traced: int                         # of those, requests whose Kong root span reached the sink
    spans: int                          # spans the sink accepted (all services)
    span_bytes: int                     # bytes of the trace requests the sink received
    latency_ms: Latency = field(default_factory=Latency)
    collector: CollectorResources = field(default_factory=CollectorResources)
    sink: CollectorResources = field(default_factory=CollectorResources)  # the fake Dynatrace's own process
    sink_rejected_items: dict[str, int] = field(default_factory=dict)    # "<signal>/<reason>" -> items
    sink_dropped_for_cap: int = 0       # the sink's store evicted items (counts are then lower bounds)
    collector_failures: dict[str, float] = field(default_factory=dict)  # otelcol_* failure counter -> increase
    collector_sent: dict[str, float] = field(default_factory=dict)      # otelcol_* sent/accepted counter -> increase
    foreign_kong_roots: int = 0         # Kong root spans whose request id the client did not record
    flush_seconds: float = 0.0          # from the end of the load until the sink's counts settled
    flush_complete: bool = True
    host_load_1m: float | None = None   # the machine's 1-minute load average when the load ended (shared machines)
    notes: list[str] = field(default_factory=list)

    # --- derived ------------------------------------------------------------------------------------------

    @property
    def requests_per_second(self) -> float:
        return self.requests_sent / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def spans_per_second(self) -> float:
        return self.spans / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def bytes_per_second(self) -> float:
        return self.span_bytes / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def spans_per_traced_request(self) -> float | None:
        return self.spans / self.traced if self.traced else None

    @property
    def bytes_per_traced_request(self) -> float | None:
        return self.span_bytes / self.traced if self.traced else None

    def fraction(self) -> dict[str, Any]:
        """Observed traced fraction, its 95% Wilson interval, and whether the configured rate is consistent.

        Consistent means exact at 0 and 1 (Kong's sampler is deterministic there), else inside the interval.
        """
        if self.requests_with_id <= 0:
            return {"observed": None, "low": None, "high": None, "rate_consistent": None}
        fraction = traced_fraction(min(self.traced, self.requests_with_id), self.requests_with_id)
        if self.rate >= 1:
            consistent = self.traced == self.requests_with_id
        elif self.rate <= 0:
            consistent = self.traced == 0
        else:
            consistent = fraction.contains(self.rate)
        return {"observed": fraction.observed, "low": fraction.low, "high": fraction.high,
                "rate_consistent": consistent}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data |= {
            "requests_per_second": self.requests_per_second,
            "traced_fraction": self.fraction(),
            "spans_per_second": self.spans_per_second,
            "bytes_per_second": self.bytes_per_second,
            "spans_per_traced_request": self.spans_per_traced_request,
            "bytes_per_traced_request": self.bytes_per_traced_request,
            "sink_rejected_total": sum(self.sink_rejected_items.values()),
            "collector_failures_total": sum(self.collector_failures.values()),
        }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RateResult:
        names = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in names}
        values["latency_ms"] = Latency(**dict(data.get("latency_ms") or {}))
        values["collector"] = CollectorResources(**dict(data.get("collector") or {}))
        values["sink"] = CollectorResources(**dict(data.get("sink") or {}))
        return cls(**values)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100): the smallest value with at least q% of values at or below it."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def latency_of(latencies_ms: Sequence[float]) -> Latency:
    if not latencies_ms:
        return Latency()
    return Latency(count=len(latencies_ms), p50=percentile(latencies_ms, 50), p95=percentile(latencies_ms, 95),
                   p99=percentile(latencies_ms, 99), mean=sum(latencies_ms) / len(latencies_ms),
                   max=float(max(latencies_ms)))


def resources_of(samples: Iterable[tuple[float, float]], source: str) -> CollectorResources:
    """Summarize (cpu percent, rss bytes) samples."""
    rows = list(samples)
    if not rows:
        return CollectorResources(source=f"{source} (no samples)")
    cpu = [c for c, _ in rows]
    rss = [r / MIB for _, r in rows]
    return CollectorResources(source=source, samples=len(rows), cpu_avg_percent=sum(cpu) / len(cpu),
                              cpu_max_percent=max(cpu), rss_avg_mib=sum(rss) / len(rss), rss_max_mib=max(rss))


# -------------------------------------------------------------------------------------------- recommendation

@dataclass(frozen=True)
class Budgets:
    max_spans_per_second: float | None = None
    max_p99_overhead_ms: float | None = None

    def any(self) -> bool:
        return self.max_spans_per_second is not None or self.max_p99_overhead_ms is not None


@dataclass
class Recommendation:
    rate: float | None                       # highest measured rate inside every budget (None: none is)
    binding: list[str]                       # budgets that stop the next rate up ("spans_per_second", "p99_overhead")
    baseline_rate: float | None              # the rate the p99 overhead is measured against
    reason: str
    per_rate: list[dict[str, Any]] = field(default_factory=list)   # rate, overhead, within each budget
    estimated_max_rate_for_span_budget: float | None = None         # spans/s is linear in the rate: budget / slope


def p99_overheads(results: Sequence[RateResult]) -> tuple[float | None, dict[float, float | None]]:
    """p99 of each rate minus the p99 of the baseline (rate 0 if measured, else the lowest rate)."""
    if not results:
        return None, {}
    baseline = min(results, key=lambda r: r.rate)
    base = baseline.latency_ms.p99
    overheads = {r.rate: (r.latency_ms.p99 - base if r.latency_ms.p99 is not None and base is not None else None)
                 for r in results}
    return baseline.rate, overheads


def spans_slope(results: Sequence[RateResult]) -> float | None:
    """Least-squares slope through the origin of spans/s against rate (spans/s at rate 1, by the measurements)."""
    num = sum(r.rate * r.spans_per_second for r in results)
    den = sum(r.rate * r.rate for r in results)
    return num / den if den > 0 else None


def recommend(results: Sequence[RateResult], budgets: Budgets) -> Recommendation:
    ordered = sorted(results, key=lambda r: r.rate)
    baseline_rate, overheads = p99_overheads(ordered)
    per_rate: list[dict[str, Any]] = []
    for result in ordered:
        overhead = overheads.get(result.rate)
        spans_ok = budgets.max_spans_per_second is None or result.spans_per_second <= budgets.max_spans_per_second
        latency_ok = (budgets.max_p99_overhead_ms is None
                      or (overhead is not None and overhead <= budgets.max_p99_overhead_ms))
        per_rate.append({"rate": result.rate, "spans_per_second": result.spans_per_second,
                         "p99_overhead_ms": overhead, "within_spans_budget": spans_ok,
                         "within_latency_budget": latency_ok})
    slope = spans_slope(ordered)
    estimate = (min(1.0, budgets.max_spans_per_second / slope)
                if budgets.max_spans_per_second is not None and slope else None)

    def answer(rate: float | None, binding: list[str], reason: str) -> Recommendation:
        return Recommendation(rate=rate, binding=binding, baseline_rate=baseline_rate, reason=reason,
                              per_rate=per_rate, estimated_max_rate_for_span_budget=estimate)

    if not ordered:
        return answer(None, [], "no rate was measured")
    if not budgets.any():
        return answer(None, [], "no budget given (--max-spans-per-second, --max-p99-overhead-ms): nothing to "
                      "recommend against")
    inside = [row for row in per_rate if row["within_spans_budget"] and row["within_latency_budget"]]
    if not inside:
        lowest = per_rate[0]
        binding = _failed_budgets(lowest)
        return answer(None, binding, f"even the lowest measured rate {lowest['rate']:g} exceeds the "
                      f"{_names(binding)} budget")
    best = inside[-1]
    above = [row for row in per_rate if row["rate"] > best["rate"]]
    if not above:
        return answer(best["rate"], [], f"every measured rate up to {best['rate']:g} is inside the budgets; no "
                      "budget binds within the measured rates")
    blocked = above[0]
    binding = _failed_budgets(blocked)
    return answer(best["rate"], binding, f"rate {best['rate']:g} is the highest inside the budgets; the next "
                  f"measured rate, {blocked['rate']:g}, exceeds the {_names(binding)} budget")


def _failed_budgets(row: Mapping[str, Any]) -> list[str]:
    failed = []
    if not row["within_spans_budget"]:
        failed.append("spans_per_second")
    if not row["within_latency_budget"]:
        failed.append("p99_overhead")
    return failed


def _names(binding: Sequence[str]) -> str:
    labels = {"spans_per_second": "spans-per-second", "p99_overhead": "p99-latency-overhead"}
    return " and ".join(labels[b] for b in binding) or "(none)"


# ----------------------------------------------------------------------------------------------------- writing

@dataclass
class SweepReport:
    stack: str
    options: dict[str, Any]
    results: list[RateResult]
    budgets: Budgets = field(default_factory=Budgets)
    created_at: float = field(default_factory=time.time)
    machine: dict[str, Any] = field(default_factory=lambda: machine_description())
    notes: list[str] = field(default_factory=list)

    def recommendation(self) -> Recommendation:
        return recommend(self.results, self.budgets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "otelgate_sampling_report": REPORT_FORMAT,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at)),
            "stack": self.stack,
            "machine": self.machine,
            "options": self.options,
            "budgets": asdict(self.budgets),
            "results": [r.to_dict() for r in sorted(self.results, key=lambda r: r.rate)],
            "recommendation": asdict(self.recommendation()),
            "plots": dict(PLOTS),
            "notes": self.notes,
        }


def machine_description() -> dict[str, Any]:
    memory: int | None
    try:
        import psutil

        memory = int(psutil.virtual_memory().total)
    except Exception:
        memory = None
    return {"cpus": os.cpu_count(), "memory_gib": round(memory / 1024**3, 1) if memory else None,
            "platform": platform.platform(), "python": platform.python_version()}


def report_folder(out: Path, created_at: float) -> Path:
    """Create and return ``<out>/sampling-<UTC timestamp>/`` (a suffix keeps two sweeps of one second apart)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created_at))
    folder = Path(out) / f"sampling-{stamp}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = Path(out) / f"sampling-{stamp}-{suffix}"
    folder.mkdir(parents=True)
    return folder


def write_report(report: SweepReport, folder: Path) -> Path:
    """Write report.json, report.md and the plots into ``folder`` (see :func:`report_folder`); return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    (folder / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (folder / "report.md").write_text(render_markdown(data))
    write_plots(data, folder)
    return folder


def _num(value: Any, fmt: str = ".1f", missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def render_markdown(data: Mapping[str, Any]) -> str:
    """``report.md``: the figures per rate as a table, then the recommendation and the notes."""
    machine = data["machine"]
    opts = data["options"]
    lines = [
        f"# Sampling-rate sweep ({data['created_at']})",
        "",
        f"Stack **{data['stack']}**; machine: {machine.get('cpus')} CPUs, {machine.get('memory_gib')} GiB RAM "
        f"({machine.get('platform')}). Load per rate: {opts.get('users')} users, spawn rate "
        f"{opts.get('spawn_rate')}/s, {opts.get('duration_s')} s, think time {opts.get('think_min')}-"
        f"{opts.get('think_max')} s, route weights `{opts.get('route_weights')}`, "
        f"{opts.get('workers') or 'no'} locust workers.",
        "",
        "| rate | requests (failed) | req/s | traced | traced fraction [95% CI] | rate consistent | spans/s "
        "| KiB/s | spans per traced req | p50 / p95 / p99 ms | p99 overhead ms | collector CPU avg / max % "
        "| collector RSS max MiB | sink CPU avg / max % | sink RSS max MiB | sink rejected | collector failures "
        "| host load 1m |",
        "|---:|---:|---:|---:|---|:---:|---:|---:|---:|---|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    recommendation = data["recommendation"]
    overhead = {row["rate"]: row["p99_overhead_ms"] for row in recommendation["per_rate"]}
    for r in data["results"]:
        frac = r["traced_fraction"]
        interval = ("-" if frac["observed"] is None else
                    f"{frac['observed']:.4f} [{frac['low']:.4f}, {frac['high']:.4f}]")
        consistent = {True: "yes", False: "**NO**", None: "-"}[frac["rate_consistent"]]
        lat = r["latency_ms"]
        col = r["collector"]
        sink = r.get("sink") or {}
        lines.append(
            f"| {r['rate']:g} | {r['requests_sent']} ({r['requests_failed']}) | {r['requests_per_second']:.1f} "
            f"| {r['traced']} | {interval} | {consistent} | {r['spans_per_second']:.1f} "
            f"| {r['bytes_per_second'] / 1024:.1f} | {_num(r['spans_per_traced_request'])} "
            f"| {_num(lat['p50'], '.0f')} / {_num(lat['p95'], '.0f')} / {_num(lat['p99'], '.0f')} "
            f"| {_num(overhead.get(r['rate']), '+.0f')} "
            f"| {_num(col['cpu_avg_percent'], '.0f')} / {_num(col['cpu_max_percent'], '.0f')} "
            f"| {_num(col['rss_max_mib'], '.0f')} "
            f"| {_num(sink.get('cpu_avg_percent'), '.0f')} / {_num(sink.get('cpu_max_percent'), '.0f')} "
            f"| {_num(sink.get('rss_max_mib'), '.0f')} | {r['sink_rejected_total']} "
            f"| {r['collector_failures_total']:g} | {_num(r.get('host_load_1m'))} |")
    lines += ["", "## Recommendation", ""]
    budgets = data["budgets"]
    given = []
    if budgets["max_spans_per_second"] is not None:
        given.append(f"spans per second ≤ {budgets['max_spans_per_second']:g}")
    if budgets["max_p99_overhead_ms"] is not None:
        given.append(f"p99 latency overhead ≤ {budgets['max_p99_overhead_ms']:g} ms (over the p99 at rate "
                     f"{_num(recommendation['baseline_rate'], 'g')})")
    lines.append(f"Budgets: {', '.join(given) if given else 'none given'}.")
    lines.append("")
    if recommendation["rate"] is not None:
        lines.append(f"**Recommended sampling rate: {recommendation['rate']:g}.** {recommendation['reason']}.")
    else:
        lines.append(f"**No recommendation:** {recommendation['reason']}.")
    if recommendation["binding"]:
        lines.append(f"Binding budget: {', '.join(recommendation['binding'])}.")
    if recommendation["estimated_max_rate_for_span_budget"] is not None:
        lines.append(f"Spans per second grow linearly with the rate; at this load the spans budget alone allows a "
                     f"rate up to ≈ {recommendation['estimated_max_rate_for_span_budget']:.3g}.")
    lines += ["", "## How to read this", "",
              "- *traced*: requests that got an `X-Kong-Request-Id` and whose Kong root span (`kong`, attribute "
              "`kong.request.id`) reached the sink. The fraction's interval is the 95% Wilson score interval; "
              "at rates 0 and 1 Kong's sampler is exact, so consistency means exactly none / every request.",
              "- *spans/s*, *KiB/s*: what the (fake) Dynatrace received over the load duration, all services' "
              "spans; *spans per traced req* is the trace size a backend bills.",
              "- *latency*: client-side, successful requests, nearest-rank percentiles; the p99 overhead is "
              "relative to the lowest measured rate.",
              "- *collector*: CPU in percent of one core and resident memory of the collector process while the "
              "load ran; *collector failures*: increase of its own `otelcol_*` failure counters (send failed, "
              "enqueue failed, refused, dropped).",
              "", "Plots: " + ", ".join(f"[{name}]({file})" for name, file in data["plots"].items()) + "."]
    notes = list(data.get("notes") or []) + [f"rate {r['rate']:g}: {note}" for r in data["results"]
                                             for note in r.get("notes") or []]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_plots(data: Mapping[str, Any], folder: Path) -> dict[str, Path]:
    """The three PNGs (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    results = data["results"]
    rates = [r["rate"] for r in results]
    written: dict[str, Path] = {}

    fig, (ax, ratio_ax) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    measured = [(r["rate"], r["traced_fraction"]) for r in results if r["traced_fraction"]["observed"] is not None]
    if measured:
        xs = [rate for rate, _ in measured]
        ys = [f["observed"] for _, f in measured]
        lower = [max(0.0, f["observed"] - f["low"]) for _, f in measured]
        upper = [max(0.0, f["high"] - f["observed"]) for _, f in measured]
        ax.errorbar(xs, ys, yerr=[lower, upper], fmt="o", capsize=5, label="observed (95% Wilson interval)")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="configured rate")
    ax.set(xlabel="Kong sampling rate", ylabel="traced fraction of requests", title="Traced fraction vs rate",
           xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    # small rates vanish on a linear axis: observed / configured, on a log rate axis (rate 0 has no ratio)
    positive = [(rate, f) for rate, f in measured if rate > 0]
    if positive:
        xs = [rate for rate, _ in positive]
        ys = [f["observed"] / rate for rate, f in positive]
        lower = [max(0.0, (f["observed"] - f["low"]) / rate) for rate, f in positive]
        upper = [max(0.0, (f["high"] - f["observed"]) / rate) for rate, f in positive]
        ratio_ax.errorbar(xs, ys, yerr=[lower, upper], fmt="o", capsize=5, label="observed / configured (95%)")
        ratio_ax.set_xscale("log")
    ratio_ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="exactly the configured rate")
    ratio_ax.set(xlabel="Kong sampling rate (log)", ylabel="observed / configured", title="Relative to the rate")
    ratio_ax.grid(alpha=0.3, which="both")
    ratio_ax.legend(loc="lower right")
    written["traced_fraction"] = _save(fig, folder / PLOTS["traced_fraction"])

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    ax.plot(rates, [r["spans_per_second"] for r in results], "o-", label="spans/s at the sink")
    budget = data["budgets"].get("max_spans_per_second")
    if budget is not None:
        ax.axhline(budget, color="red", linestyle=":", label=f"budget {budget:g} spans/s")
    ax.set(xlabel="Kong sampling rate", ylabel="spans per second", title="Span volume vs rate")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    written["spans_per_second"] = _save(fig, folder / PLOTS["spans_per_second"])

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        points = [(r["rate"], r["latency_ms"][key]) for r in results if r["latency_ms"][key] is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], style, label=key)
    recommendation = data["recommendation"]
    overhead_budget = data["budgets"].get("max_p99_overhead_ms")
    baseline = next((r for r in results if r["rate"] == recommendation["baseline_rate"]), None)
    if overhead_budget is not None and baseline is not None and baseline["latency_ms"]["p99"] is not None:
        ax.axhline(baseline["latency_ms"]["p99"] + overhead_budget, color="red", linestyle=":",
                   label=f"p99 budget (+{overhead_budget:g} ms)")
    ax.set(xlabel="Kong sampling rate", ylabel="client latency, ms", title="Latency percentiles vs rate")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    written["latency"] = _save(fig, folder / PLOTS["latency"])
    return written


def _save(fig: Any, path: Path) -> Path:
    from matplotlib import pyplot as plt

    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def load_report(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(folder) / "report.json").read_text())
    if data.get("otelgate_sampling_report") != REPORT_FORMAT:
        raise ValueError(f"{folder}/report.json is not an otelgate sampling report (format {REPORT_FORMAT})")
    return data
