"""One locust run, headless in subprocesses (gevent never enters this process): the command lines, the progress
read from locust's CSV history, and what the users recorded (the per-process request logs, locust's JSON stats)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import DEFAULT_ROUTE_WEIGHTS
from otelgate.procs import ManagedProcess, free_port
from otelgate.waiting import WaitTimeout, poll_until

# not otelgate.paths: loadtests/ is not part of the package; its locust processes import it from this folder
LOADTESTS_PARENT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
WORKERS_MAX_WAIT = 60  # seconds the master waits for its workers to connect


class SweepError(RuntimeError):
    """A step of the sweep failed; the message says which and what was seen."""


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


@dataclass
class LoadSample:
    """The locust master's latest aggregated line of ``_stats_history.csv``."""

    users: int = 0
    requests_per_second: float = 0.0
    requests: int = 0
    failures: int = 0


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
    return LocustRun(folder=folder, stats=list(stats), client=read_request_logs(folder / "requests"))
