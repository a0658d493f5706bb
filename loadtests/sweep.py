"""The sampling-rate sweep: for each Kong sampling rate, load the gateway with locust and measure what it costs.

    python -m loadtests.sweep --stack local --rates 0,0.01,0.1,0.5,1 --users 50 --spawn-rate 10 --duration 60s \\
        [--workers N] [--max-spans-per-second X] [--max-p99-overhead-ms Y] [--out reports/]

Per rate: reconfigure the stack (Kong's opentelemetry plugin ``sampling_rate``), reset the sink, run locust headless
as a subprocess (gevent never enters this process) with ``--csv`` and ``--json-file``, wait until the pipeline has
flushed (the sink's counts stop changing and every access log arrived), then join the ``X-Kong-Request-Id`` of every
answer with the Kong root spans at the sink. The figures go to ``otelgate.reports.sampling``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests import DEFAULT_ROUTE_WEIGHTS, parse_weights
from loadtests.locustrun import LoadSample, LoadShape, LoadSpec, LocustRun, SweepError, run_locust
from loadtests.measure import (
    COLLECTOR_FAILURE,
    COLLECTOR_SENT,
    ResourceSampler,
    SinkView,
    collector_metrics_url,
    counter_increase,
    kong_roots_by_request,
    resource_probe,
    scrape_quietly,
    sink_limit_note,
    sink_resource_probe,
    sink_view,
    wait_flushed,
)
from otelgate import extras
from otelgate.reports import sampling as report
from otelgate.stacks.base import Stack, StackOptions
from otelgate.stacks.registry import STACK_NAMES, stack_module

DEFAULT_RATES = (0.0, 0.01, 0.1, 0.5, 1.0)

__all__ = ["SweepError", "build_parser", "main", "run_sweep"]


# ---------------------------------------------------------------------------------------------------- options

def parse_duration(text: str) -> float:
    """``60s``, ``2m``, ``1m30s``, ``90`` -> seconds."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", value)
        if not parts or not any(parts.groups()):
            raise argparse.ArgumentTypeError(f"duration {text!r}: use e.g. 60s, 2m, 1m30s or plain seconds")
        hours, minutes, secs = (int(g or 0) for g in parts.groups())
        seconds = float(hours * 3600 + minutes * 60 + secs)
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"duration {text!r}: at least 1 s")
    return seconds


def parse_duration_or_zero(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0s") else parse_duration(text)


def parse_rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"rates {text!r}: a comma-separated list of numbers in [0, 1]") from None
    if not rates or any(not 0 <= r <= 1 for r in rates):
        raise argparse.ArgumentTypeError(f"rates {text!r}: a comma-separated list of numbers in [0, 1]")
    if len(set(rates)) != len(rates):
        raise argparse.ArgumentTypeError(f"rates {text!r}: a rate is listed twice")
    return rates


def _weights(text: str) -> str:
    try:
        parse_weights(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive(kind: type) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", choices=STACK_NAMES, default="local", help="where the pipeline runs (default local)")
    parser.add_argument("--rates", type=parse_rates, default=DEFAULT_RATES,
                        help="Kong sampling rates to measure, comma-separated (default 0,0.01,0.1,0.5,1)")
    parser.add_argument("--users", type=_positive(int), default=50, help="locust users (default 50)")
    parser.add_argument("--spawn-rate", type=_positive(float), default=10.0, help="users started per second "
                        "(default 10)")
    parser.add_argument("--duration", type=parse_duration, default=60.0, help="load per rate, e.g. 60s (default)")
    parser.add_argument("--warmup", type=parse_duration_or_zero, default=10.0,
                        help="unmeasured load before the first rate, so it does not pay for cold processes "
                        "(default 10s; 0 = none)")
    parser.add_argument("--workers", type=int, default=0, help="locust workers (0 = one local locust process; "
                        "N > 0 = a master plus N worker processes)")
    parser.add_argument("--remote-workers", type=int, default=0,
                        help="locust workers started on other machines (they connect to this master; see "
                        "docs/load.md); needs --master-bind-host")
    parser.add_argument("--master-bind-host", default="127.0.0.1",
                        help="address the locust master listens on (default 127.0.0.1; remote workers need an "
                        "address they can reach)")
    parser.add_argument("--master-port", type=int, default=None, help="locust master port (default: a free one)")
    parser.add_argument("--max-spans-per-second", type=_positive(float), default=None,
                        help="budget: spans per second the backend may receive")
    parser.add_argument("--max-p99-overhead-ms", type=float, default=None,
                        help="budget: p99 client latency over the lowest rate's p99, milliseconds")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="report folder parent (default reports/)")
    parser.add_argument("--route-weights", type=_weights, default=DEFAULT_ROUTE_WEIGHTS,
                        help=f"relative route weights (default {DEFAULT_ROUTE_WEIGHTS})")
    parser.add_argument("--think-min", type=float, default=0.5, help="shortest think time, seconds (default 0.5)")
    parser.add_argument("--think-max", type=float, default=1.5, help="longest think time, seconds (default 1.5)")
    parser.add_argument("--request-timeout", type=_positive(float), default=10.0,
                        help="timeout of every request, seconds (default 10)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")
    parser.add_argument("--cluster-name", default=None, help="kind cluster name (--stack kind)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig of the cluster (--stack external)")
    return parser


# ------------------------------------------------------------------------------------------------ progress

class Progress:
    """Live progress: a rich progress bar on a terminal, a plain line every 10 s otherwise (CI logs)."""

    def __init__(self, enabled: bool = True) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.interactive = enabled and self.console.is_terminal

    def say(self, message: str) -> None:
        if self.enabled:
            self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)

    @contextlib.contextmanager
    def load(self, label: str, total_s: float) -> Iterator[Callable[[float, LoadSample], None]]:
        if not self.enabled:
            yield lambda _elapsed, _sample: None
            return
        if not self.interactive:
            last = {"at": -10.0}

            def plain(elapsed: float, sample: LoadSample) -> None:
                if elapsed - last["at"] >= 10.0:
                    last["at"] = elapsed
                    self.say(f"{label}: {elapsed:.0f}/{total_s:.0f} s, {sample.users} users, "
                             f"{sample.requests_per_second:.1f} req/s, {sample.requests} requests, "
                             f"{sample.failures} failures")
            yield plain
            return
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RichProgress

        columns = (TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed:>4.0f}/{task.total:.0f} s"),
                   TextColumn("{task.fields[users]:>4} users  {task.fields[rps]:>6.1f} req/s  "
                              "{task.fields[requests]:>7} requests  {task.fields[failures]} failures"))
        with RichProgress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(label, total=total_s, users=0, rps=0.0, requests=0, failures=0)

            def update(elapsed: float, sample: LoadSample) -> None:
                bar.update(task, completed=min(elapsed, total_s), users=sample.users,
                           rps=sample.requests_per_second, requests=sample.requests, failures=sample.failures)
            yield update


# ------------------------------------------------------------------------------------------------ the sweep

@dataclass(frozen=True, kw_only=True)
class SweepConfig(LoadShape):
    rates: tuple[float, ...] = DEFAULT_RATES
    warmup_s: float = 10.0
    budgets: report.Budgets = field(default_factory=report.Budgets)

    def spec(self, host: str) -> LoadSpec:
        shape = {f.name: getattr(self, f.name) for f in dataclasses.fields(LoadShape)}
        return LoadSpec(host=host, **shape)

    def options(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("budgets")
        data["rates"] = list(self.rates)
        return data


def measure_rate(stack: Stack, rate: float, config: SweepConfig, folder: Path, progress: Progress,
                 label: str) -> report.RateResult:
    progress.say(f"{label}: reconfiguring Kong's sampling_rate to {rate:g}")
    stack.reconfigure(sampling_rate=rate)
    stack.sink.reset()
    metrics_url = collector_metrics_url(stack)
    before = scrape_quietly(metrics_url)
    probe, why_not = resource_probe(stack)
    sink_probe, sink_why_not = sink_resource_probe(stack)
    spec = config.spec(stack.gateway_url)
    with ResourceSampler(probe) as sampler, ResourceSampler(sink_probe) as sink_sampler, \
            progress.load(label, spec.duration_s) as update:
        run = run_locust(spec, folder, update)
    load_when_done = os.getloadavg()[0]
    if load_when_done > (os.cpu_count() or 1):
        busy_note = (f"host load average {load_when_done:.1f} on {os.cpu_count()} CPUs when the load ended: other "
                     "processes competed for the CPU, latency and CPU figures carry that noise")
    else:
        busy_note = ""
    answered = [rid for rid in run.client.request_ids if rid]
    progress.say(f"{label}: load done ({run.requests} requests, {run.failures} failed); waiting for the pipeline "
                 "to flush")
    flush_seconds, complete, flush_note = wait_flushed(stack, len(answered))
    after = scrape_quietly(metrics_url)
    view = sink_view(stack)
    roots = kong_roots_by_request(stack)
    denominator, traced, foreign, join_note = join_client_and_sink(run, answered, roots)
    result = report.RateResult(
        rate=rate, duration_s=run.load_seconds(spec.duration_s), users=spec.users, requests_sent=run.requests,
        requests_failed=run.failures, requests_with_id=denominator, traced=traced, spans=view.spans,
        span_bytes=view.span_bytes, latency_ms=report.latency_of(run.client.ok_latencies),
        collector=sampler.summary(why_not), sink=sink_sampler.summary(sink_why_not),
        sink_rejected_items=view.rejected,
        sink_dropped_for_cap=view.dropped_for_cap,
        collector_failures=counter_increase(before or {}, after or {}, COLLECTOR_FAILURE),
        collector_sent=counter_increase(before or {}, after or {}, COLLECTOR_SENT),
        foreign_kong_roots=foreign, flush_seconds=flush_seconds, flush_complete=complete,
        host_load_1m=load_when_done)
    other_notes = _notes(run, answered, view, flush_note, metrics_url, before, after)
    result.notes.extend(filter(None, [sink_limit_note(result.sink), join_note, busy_note, *other_notes]))
    progress.say(f"{label}: {result.traced}/{result.requests_with_id} traced, {result.spans} spans "
                 f"({result.spans_per_second:.1f}/s), p99 {_ms(result.latency_ms.p99)}")
    return result


def join_client_and_sink(run: LocustRun, answered: Sequence[str], roots: Sequence[str]
                         ) -> tuple[int, int, int, str]:
    """(denominator, traced, foreign roots, note). With every request in the client logs: requests carrying an
    X-Kong-Request-Id, and those of them with a Kong root. When workers ran elsewhere their logs are not here: then
    every request locust counted, and every Kong root at the sink (the sink was reset before the load)."""
    if len(run.client.request_ids) == run.requests:
        wanted = set(answered)
        traced = len({rid for rid in roots if rid in wanted})
        return len(wanted), traced, sum(1 for rid in roots if rid not in wanted), ""
    traced = min(len(roots), run.requests)
    note = (f"client request logs hold {len(run.client.request_ids)} of {run.requests} requests (remote "
            "workers?): traced = all Kong roots at the sink, denominator = locust's request count")
    if len(roots) > run.requests:
        note += f"; the sink holds {len(roots)} Kong roots, more than the requests sent (other traffic?)"
    return run.requests, traced, 0, note


def _notes(run: LocustRun, answered: Sequence[str], view: SinkView, flush_note: str, metrics_url: str | None,
           before: Mapping[str, float] | None, after: Mapping[str, float] | None) -> list[str]:
    notes = [flush_note] if flush_note else []
    if len(set(answered)) != len(answered):
        notes.append(f"{len(answered) - len(set(answered))} duplicate X-Kong-Request-Id values")
    if view.dropped_for_cap:
        notes.append(f"the sink's store evicted {view.dropped_for_cap} items (cap): traced counts are lower bounds")
    if metrics_url is None:
        notes.append("collector self-metrics not available on this stack: collector failures not measured")
    elif before is None or after is None:
        notes.append(f"collector self-metrics at {metrics_url} could not be scraped: collector failures not "
                     "measured")
    return notes


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def run_sweep(stack: Stack, config: SweepConfig, folder: Path, progress: Progress | None = None
              ) -> list[report.RateResult]:
    """Measure every rate of ``config`` on ``stack``; locust files go to ``<folder>/runs/``. The stack's sampling
    rate is restored afterwards."""
    progress = progress or Progress(enabled=False)
    original = stack.settings.sampling_rate
    results: list[report.RateResult] = []
    try:
        if config.warmup_s > 0:
            progress.say(f"warm-up: {config.warmup_s:g} s of unmeasured load at rate {config.rates[0]:g}")
            stack.reconfigure(sampling_rate=config.rates[0])
            warmup = dataclasses.replace(config.spec(stack.gateway_url), duration_s=config.warmup_s)
            with progress.load("warm-up", warmup.duration_s) as update:
                run_locust(warmup, folder / "runs" / "warmup", update)
        for index, rate in enumerate(config.rates, 1):
            label = f"rate {rate:g} ({index}/{len(config.rates)})"
            results.append(measure_rate(stack, rate, config, folder / "runs" / f"rate-{rate:g}", progress, label))
    finally:
        with contextlib.suppress(Exception):
            stack.reconfigure(sampling_rate=original)
    return results


@contextlib.contextmanager
def open_stack(args: argparse.Namespace, workdir: Path, progress: Progress) -> Iterator[Stack]:
    """Start the stack ``--stack`` names (through its :class:`~otelgate.stacks.base.StackModule`), close it after."""
    try:
        stack = _start_stack(args, workdir, progress)
    except (KeyboardInterrupt, SweepError):
        raise
    except Exception as exc:  # any bring-up failure: one clear line, the stack already cleaned up after itself
        raise SweepError(f"the {args.stack} stack did not come up: {type(exc).__name__}: {exc}") from exc
    try:
        yield stack
    finally:
        stack.close()


def _start_stack(args: argparse.Namespace, workdir: Path, progress: Progress) -> Stack:
    # the settings as in the manifests: the bring-up canary must be traced; each rate is applied by reconfigure()
    options = StackOptions(workdir=workdir, cluster_name=args.cluster_name,
                           kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None)
    progress.say(f"starting the {args.stack} stack (logs in {workdir})")
    return stack_module(args.stack).start(options)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    needs = extras.missing("locust", "matplotlib")  # imported only by the locust processes and the report
    if needs:
        print(f"loadtests.sweep: {needs}", file=sys.stderr)
        return extras.EXIT_MISSING_EXTRA
    if args.workers < 0 or args.remote_workers < 0:
        print("error: --workers and --remote-workers must be 0 or more", file=sys.stderr)
        return 2
    if args.remote_workers and args.master_bind_host == "127.0.0.1":
        print("error: --remote-workers needs --master-bind-host <an address the other machines reach>",
              file=sys.stderr)
        return 2
    if not 0 <= args.think_min <= args.think_max:
        print(f"error: need 0 <= --think-min ({args.think_min}) <= --think-max ({args.think_max})", file=sys.stderr)
        return 2
    config = SweepConfig(rates=args.rates, users=args.users, spawn_rate=args.spawn_rate, duration_s=args.duration,
                         workers=args.workers, route_weights=args.route_weights, think_min=args.think_min,
                         think_max=args.think_max, request_timeout=args.request_timeout,
                         remote_workers=args.remote_workers, master_bind_host=args.master_bind_host,
                         master_port=args.master_port, warmup_s=args.warmup,
                         budgets=report.Budgets(args.max_spans_per_second, args.max_p99_overhead_ms))
    progress = Progress(enabled=not args.no_progress)
    created = time.time()
    folder = report.report_folder(args.out.resolve(), created)  # absolute: stack processes run in other folders
    progress.say(f"sampling sweep: rates {', '.join(f'{r:g}' for r in config.rates)}; {config.users} users, "
                 f"{config.duration_s:g} s per rate; report in {folder}")
    try:
        with open_stack(args, folder / "stack", progress) as stack:
            results = run_sweep(stack, config, folder, progress)
            stack_name = stack.name
    except KeyboardInterrupt:
        print(f"interrupted; partial files in {folder}", file=sys.stderr)
        return 130
    except (SweepError, AssertionError, RuntimeError, OSError) as exc:
        print(f"error: the sweep failed: {exc}\npartial files in {folder}", file=sys.stderr)
        return 1
    sweep = report.SweepReport(stack=stack_name, options=config.options(), results=results, budgets=config.budgets,
                               created_at=created)
    report.write_report(sweep, folder)
    progress.say(f"report: {folder / 'report.md'}")
    print((folder / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
