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
import csv
import dataclasses
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from loadtests import DEFAULT_ROUTE_WEIGHTS, parse_weights
from otelgate.claims import timing_of
from otelgate.procs import ManagedProcess, free_port
from otelgate.reports import sampling as report
from otelgate.stacks.base import Stack, StackSettings
from otelgate.waiting import WaitTimeout, poll_until, wait_stable

# not otelgate.paths: loadtests/ is not part of the package; its locust processes import it from this folder
LOADTESTS_PARENT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DEFAULT_RATES = (0.0, 0.01, 0.1, 0.5, 1.0)
KONG_ROOT_SPAN = "kong"
REQUEST_ID_ATTRIBUTE = "kong.request.id"
STACKS = ("local", "kind", "external")
WORKERS_MAX_WAIT = 60  # seconds the master waits for its workers to connect
# collector self-metrics that count telemetry the collector failed to pass on (names without the _total suffix)
COLLECTOR_FAILURE = re.compile(r"^otelcol_(exporter_send_failed|exporter_enqueue_failed|processor_dropped|"
                               r"processor_refused|receiver_refused|receiver_failed)_\w+$")
COLLECTOR_SENT = re.compile(r"^otelcol_(exporter_sent|receiver_accepted)_(spans|log_records|metric_points)$")


class SweepError(RuntimeError):
    """A step of the sweep failed; the message says which and what was seen."""


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


@dataclass(frozen=True, kw_only=True)
class LoadShape:
    """How locust loads the gateway (shared by one run and by a whole sweep)."""

    users: int = 50
    spawn_rate: float = 10.0
    duration_s: float = 60.0
    workers: int = 0
    route_weights: str = DEFAULT_ROUTE_WEIGHTS
    think_min: float = 0.5
    think_max: float = 1.5
    request_timeout: float = 10.0
    remote_workers: int = 0             # workers started elsewhere (other machines) that connect to the master
    master_bind_host: str = "127.0.0.1"
    master_port: int | None = None      # None: a free port


@dataclass(frozen=True, kw_only=True)
class LoadSpec(LoadShape):
    """One locust run."""

    host: str

    @property
    def distributed(self) -> bool:
        return self.workers + self.remote_workers > 0

    def wall_clock_bound(self) -> float:
        """How long the locust master may take before the sweep kills it (spawn, run, stop, workers joining)."""
        return self.duration_s + self.request_timeout + (WORKERS_MAX_WAIT if self.distributed else 0.0) + 30.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", choices=STACKS, default="local", help="where the pipeline runs (default local)")
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

@dataclass
class LoadSample:
    """The locust master's latest aggregated line of ``_stats_history.csv``."""

    users: int = 0
    requests_per_second: float = 0.0
    requests: int = 0
    failures: int = 0


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


def read_history(path: Path) -> LoadSample | None:
    """The last aggregated row of a locust ``_stats_history.csv`` (None before locust wrote one)."""
    try:
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]
    except (OSError, csv.Error):
        return None
    if not rows:
        return None
    row = rows[-1]

    def number(key: str) -> float:
        try:
            return float(row.get(key) or 0)
        except ValueError:
            return 0.0

    return LoadSample(users=int(number("User Count")), requests_per_second=number("Requests/s"),
                      requests=int(number("Total Request Count")), failures=int(number("Total Failure Count")))


# --------------------------------------------------------------------------------------------------- locust

@dataclass
class ClientLog:
    """What the locust users recorded, one entry per answer or error (from the per-process TSV files)."""

    request_ids: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)

    @property
    def ok_latencies(self) -> list[float]:
        return [lat for lat, good in zip(self.latencies_ms, self.ok, strict=True) if good]


def read_request_logs(folder: Path) -> ClientLog:
    log = ClientLog()
    for path in sorted(folder.glob("requests-*.tsv")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            fields = line.split("\t")
            if len(fields) != 5:
                raise SweepError(f"{path}:{number}: expected 5 tab-separated fields, got {line!r}")
            request_id, status, latency, _route, ok = fields
            log.request_ids.append(request_id)
            log.statuses.append(int(status))
            log.latencies_ms.append(float(latency))
            log.ok.append(ok == "1")
    return log


@dataclass
class LocustRun:
    folder: Path
    stats: list[dict[str, Any]]
    client: ClientLog
    wall_seconds: float

    @property
    def requests(self) -> int:
        return sum(int(e.get("num_requests", 0)) for e in self.stats)

    @property
    def failures(self) -> int:
        return sum(int(e.get("num_failures", 0)) for e in self.stats)

    def load_seconds(self, fallback: float) -> float:
        """From the first request started to the last one answered, by locust's own stats."""
        starts = [float(e["start_time"]) for e in self.stats if e.get("start_time")]
        ends = [float(e["last_request_timestamp"]) for e in self.stats if e.get("last_request_timestamp")]
        if starts and ends and max(ends) > min(starts):
            return max(ends) - min(starts)
        return fallback


def locust_env() -> dict[str, str]:
    """The locust processes import the locust-free ``loadtests`` package from the repository root."""
    path = os.pathsep.join(filter(None, [str(LOADTESTS_PARENT), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def master_argv(spec: LoadSpec, folder: Path, master_port: int | None) -> list[str]:
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", spec.host,
            "--users", str(spec.users), "--spawn-rate", f"{spec.spawn_rate:g}", "--run-time", f"{spec.duration_s:g}s",
            "--stop-timeout", f"{spec.request_timeout + 1:g}", "--csv", str(folder / "locust"),
            "--json-file", str(folder / "locust"), "--only-summary", "--exit-code-on-error", "0",
            "--route-weights", spec.route_weights, "--think-min", f"{spec.think_min:g}",
            "--think-max", f"{spec.think_max:g}", "--request-timeout", f"{spec.request_timeout:g}",
            "--request-log-dir", str(folder / "requests")]
    if master_port is not None:
        argv += ["--master", "--master-bind-host", spec.master_bind_host, "--master-bind-port", str(master_port),
                 "--expect-workers", str(spec.workers + spec.remote_workers),
                 "--expect-workers-max-wait", str(WORKERS_MAX_WAIT)]
    return argv


def worker_argv(master_port: int) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1",
            "--master-port", str(master_port)]


def run_locust(spec: LoadSpec, folder: Path, on_progress: Callable[[float, LoadSample], None]) -> LocustRun:
    """Run locust headless in subprocesses: one local process, or a master with ``spec.workers`` local workers
    (plus ``spec.remote_workers`` that connect from elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = locust_env()
    master_port = (spec.master_port or free_port()) if spec.distributed else None
    master = ManagedProcess("locust-master" if master_port else "locust", master_argv(spec, folder, master_port),
                            folder / "locust.log", env=env, cwd=LOADTESTS_PARENT)
    workers = [ManagedProcess(f"locust-worker-{i}", worker_argv(master_port), folder / f"locust-worker-{i}.log",
                              env=env, cwd=LOADTESTS_PARENT) for i in range(spec.workers)] if master_port else []
    if spec.remote_workers:
        on_progress(0.0, LoadSample())
        print(f"locust master on {spec.master_bind_host}:{master_port} waits {WORKERS_MAX_WAIT} s for "
              f"{spec.remote_workers} remote worker(s): locust -f loadtests/locustfile.py --worker "
              f"--master-host <this host> --master-port {master_port}", file=sys.stderr, flush=True)
    started = time.monotonic()
    master.start()
    try:
        for worker in workers:
            worker.start()
        history = folder / "locust_stats_history.csv"

        def observe() -> bool:
            on_progress(time.monotonic() - started, read_history(history) or LoadSample())
            return not master.alive()

        try:
            poll_until(observe, bool, what=f"locust ({master.name}) to finish a {spec.duration_s:g} s run",
                       timeout=spec.wall_clock_bound(), interval=1.0)
        except WaitTimeout as exc:
            raise SweepError(f"{exc}\n--- {master.name} log tail ---\n{master.log_tail()}") from None
        code = master.popen.returncode if master.popen else None
        if code != 0:
            raise SweepError(f"locust exited with code {code}; log {master.log_path}:\n{master.log_tail()}")
        for worker in workers:  # workers quit when the master does; bounded in case one does not
            with contextlib.suppress(WaitTimeout):
                poll_until(worker.alive, lambda alive: not alive, what=f"{worker.name} to exit", timeout=15)
    finally:
        for proc in (*workers, master):
            proc.stop()
    stats_path = folder / "locust.json"
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, ValueError) as exc:
        raise SweepError(f"locust wrote no readable stats ({stats_path}: {exc}); log tail:\n{master.log_tail()}"
                         ) from None
    return LocustRun(folder=folder, stats=list(stats), client=read_request_logs(folder / "requests"),
                     wall_seconds=time.monotonic() - started)


# --------------------------------------------------------------------------------------- collector observation

class ResourceProbe(Protocol):
    """One sample of the collector's (CPU percent of one core, resident bytes), or None when unavailable."""

    source: str

    def sample(self) -> tuple[float, float] | None: ...


class PsutilProbe:
    """The local collector process (and any children) by pid."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.source = f"psutil, pid {pid}"
        self._process = psutil.Process(pid)
        self._tracked: dict[int, Any] = {}
        self._procs()  # the first cpu_percent() call of each process only sets its baseline

    def _procs(self) -> list[Any]:
        import psutil

        procs = [self._process]
        with contextlib.suppress(psutil.Error):
            procs += self._process.children(recursive=True)
        current = []
        for proc in procs:
            if proc.pid not in self._tracked:
                self._tracked[proc.pid] = proc
                with contextlib.suppress(psutil.Error):
                    proc.cpu_percent(None)  # baseline only: the next call measures from here
            current.append(self._tracked[proc.pid])
        return current

    def sample(self) -> tuple[float, float] | None:
        import psutil

        cpu = rss = 0.0
        try:
            for proc in self._procs():
                with contextlib.suppress(psutil.NoSuchProcess):
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
        except psutil.Error:
            return None
        return cpu, rss


class SelfMetricsProbe:
    """A collector anywhere (e.g. in a cluster, port-forwarded): ``otelcol_process_cpu_seconds`` and
    ``otelcol_process_memory_rss`` from its own metrics endpoint."""

    def __init__(self, url: str) -> None:
        self.source = f"collector self-metrics {url}"
        self.url = url
        self._last: tuple[float, float] | None = None

    def sample(self) -> tuple[float, float] | None:
        try:
            metrics = scrape_metrics(self.url)
        except (httpx.HTTPError, ValueError):
            return None
        now, cpu_seconds = time.monotonic(), metrics.get("otelcol_process_cpu_seconds")
        rss = metrics.get("otelcol_process_memory_rss")
        if cpu_seconds is None or rss is None:
            return None
        last, self._last = self._last, (now, cpu_seconds)
        if last is None or now <= last[0]:
            return None
        return 100.0 * (cpu_seconds - last[1]) / (now - last[0]), rss


class ResourceSampler:
    """Samples a probe once a second on a thread while the load runs."""

    def __init__(self, probe: ResourceProbe | None, interval: float = 1.0) -> None:
        self.probe = probe
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector-resources", daemon=True)

    def _run(self) -> None:
        assert self.probe is not None
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # one failed sample must not end the sampling
                value = self.probe.sample()
                if value is not None:
                    self.samples.append(value)

    def __enter__(self) -> ResourceSampler:
        if self.probe is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def summary(self, why_not: str) -> report.CollectorResources:
        if self.probe is None:
            return report.CollectorResources(source=f"not measured: {why_not}")
        return report.resources_of(self.samples, self.probe.source)


def resource_probe(stack: Stack) -> tuple[ResourceProbe | None, str]:
    """How to watch the collector's CPU and memory on this stack, or why it cannot be watched.

    Hooks, in order: ``stack.collector_resource_probe()`` (any stack may provide its own, e.g. the metrics API of
    a cluster), ``stack.collector_pid()`` (local processes, via psutil), then the collector's own metrics
    endpoint (``collector_metrics_url``).
    """
    hook = getattr(stack, "collector_resource_probe", None)
    if callable(hook):
        probe = hook()
        if probe is not None:
            return probe, ""
    pid_of = getattr(stack, "collector_pid", None)
    if callable(pid_of):
        pid = pid_of()
        if pid is not None:
            return PsutilProbe(pid), ""
    url = collector_metrics_url(stack)
    if url:
        return SelfMetricsProbe(url), ""
    return None, (f"the {stack.name} stack exposes no collector_resource_probe(), collector_pid() or "
                  "collector_metrics_url")


def collector_metrics_url(stack: Stack) -> str | None:
    """The collector's own Prometheus metrics (``service.telemetry``) endpoint, if the stack exposes one."""
    value = getattr(stack, "collector_metrics_url", None)
    value = value() if callable(value) else value
    if value:
        return str(value)
    urls = getattr(stack, "urls", None)
    if callable(urls):
        for label, url in urls().items():
            if "collector" in label and "own metrics" in label:
                return str(url)
    return None


def parse_prometheus_text(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {metric name without ``_total``: sum over its series}."""
    totals: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            tail = rest.rsplit("}", 1)[1] if "}" in rest else ""
        else:
            name, _, tail = line.partition(" ")
        parts = tail.split()
        if not parts:
            raise ValueError(f"metric line without a value: {line!r}")
        value = float(parts[0])
        key = name.strip().removesuffix("_total")
        totals[key] = totals.get(key, 0.0) + value
    return totals


def scrape_metrics(url: str, timeout: float = 5.0) -> dict[str, float]:
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return parse_prometheus_text(response.text)


def counter_increase(before: Mapping[str, float], after: Mapping[str, float], pattern: re.Pattern[str]
                     ) -> dict[str, float]:
    """Increase of every counter matching ``pattern`` (a counter that went down was reset: its value counts)."""
    increase: dict[str, float] = {}
    for name, value in after.items():
        if pattern.match(name):
            start = before.get(name, 0.0)
            increase[name] = value - start if value >= start else value
    return increase


# ----------------------------------------------------------------------------------------------- sink side

@dataclass
class SinkView:
    spans: int
    span_bytes: int
    logs: int
    dropped_for_cap: int
    rejected: dict[str, int]


def sink_view(stack: Stack) -> SinkView:
    stats = stack.sink.stats()
    rejected: dict[str, int] = {}
    for rejection in stack.sink.rejections():
        key = f"{rejection.get('signal')}/{rejection.get('reason')}"
        rejected[key] = rejected.get(key, 0) + int(rejection.get("items") or 0)
    return SinkView(spans=int(stats["traces"]["items"]), span_bytes=int(stats["traces"]["bytes"]),
                    logs=int(stats["logs"]["items"]),
                    dropped_for_cap=sum(int(s.get("dropped_for_cap", 0)) for s in stats.values()),
                    rejected=rejected)


def wait_flushed(stack: Stack, expected_logs: int) -> tuple[float, bool, str]:
    """Wait until the sink's span and log counts stop changing and at least one log per answered request arrived
    (the access logs travel the same collector, so the pipeline has drained). Returns (seconds, complete, note)."""
    timing = timing_of(stack)
    started = time.monotonic()

    def counts() -> tuple[int, int, int]:
        stats = stack.sink.stats()
        return int(stats["traces"]["items"]), int(stats["traces"]["requests"]), int(stats["logs"]["items"])

    try:
        wait_stable(counts, what=f"the sink's span and log counts to settle with >= {expected_logs} logs",
                    timeout=2 * timing.signal, quiet=timing.settle, interval=0.5,
                    ready=lambda c: c[2] >= expected_logs)
        return time.monotonic() - started, True, ""
    except WaitTimeout as exc:
        return time.monotonic() - started, False, f"pipeline flush incomplete: {exc}"


def kong_roots_by_request(stack: Stack) -> list[str]:
    """``kong.request.id`` of every Kong root span at the sink (one bulk query with a generous timeout)."""
    from otelgate.sink.client import SinkClient

    with SinkClient(stack.sink.base_url, timeout=60.0) as client:
        spans = client.spans(name=KONG_ROOT_SPAN)
    return [str(s.get("attributes", {}).get(REQUEST_ID_ATTRIBUTE, "")) for s in spans
            if not s.get("parent_span_id")]


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
    before = _scrape_quietly(metrics_url)
    probe, why_not = resource_probe(stack)
    spec = config.spec(stack.gateway_url)
    with ResourceSampler(probe) as sampler, progress.load(label, spec.duration_s) as update:
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
    after = _scrape_quietly(metrics_url)
    view = sink_view(stack)
    roots = kong_roots_by_request(stack)
    denominator, traced, foreign, join_note = join_client_and_sink(run, answered, roots)
    result = report.RateResult(
        rate=rate, duration_s=run.load_seconds(spec.duration_s), users=spec.users, requests_sent=run.requests,
        requests_failed=run.failures, requests_with_id=denominator, traced=traced, spans=view.spans,
        span_bytes=view.span_bytes, latency_ms=report.latency_of(run.client.ok_latencies),
        collector=sampler.summary(why_not), sink_rejected_items=view.rejected,
        sink_dropped_for_cap=view.dropped_for_cap,
        collector_failures=counter_increase(before or {}, after or {}, COLLECTOR_FAILURE),
        collector_sent=counter_increase(before or {}, after or {}, COLLECTOR_SENT),
        foreign_kong_roots=foreign, flush_seconds=flush_seconds, flush_complete=complete,
        host_load_1m=load_when_done)
    other_notes = _notes(run, answered, view, flush_note, metrics_url, before, after)
    result.notes.extend(filter(None, [join_note, busy_note, *other_notes]))
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


def _scrape_quietly(url: str | None) -> dict[str, float] | None:
    if url is None:
        return None
    try:
        return scrape_metrics(url)
    except (httpx.HTTPError, ValueError):
        return None


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
    """Start the stack ``--stack`` names (local here; kind/external through their modules) and close it after."""
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


def _start_stack(args: argparse.Namespace, workdir: Path, progress: Progress) -> Any:
    stack: Any
    if args.stack == "local":
        from otelgate.stacks.local import LocalStack

        progress.say(f"starting the local stack (logs in {workdir})")
        # as in the manifests: the bring-up canary must be traced; each rate is applied by reconfigure()
        stack = LocalStack.start(StackSettings(), workdir)
    else:
        from otelgate.stacks.kind import KindOptions, KindStack

        external = args.stack == "external"
        options = KindOptions.from_namespace(args, external=external)
        stack_class: Any = KindStack
        if external:
            from otelgate.stacks.external import ExternalStack

            stack_class = ExternalStack
        progress.say(f"starting the {args.stack} stack")
        stack = stack_class.start(options)
    return stack


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
