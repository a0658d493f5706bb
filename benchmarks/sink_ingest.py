"""Sink ingest, side by side in one run: this sink, the old sink, a peer, and the bare decode rate.

    python benchmarks/sink_ingest.py [--rounds 5] [--seconds 3] [--batches 512,8192] [--old-ref REF]

Targets, each a child process measured over real HTTP by the same senders (``--senders`` processes, one keep-alive
connection each — a minimal HTTP/1.1 client on a raw socket, so the senders cost little CPU — posting
pre-serialized Kong-like ExportTraceServiceRequests, no compression):
- ``new``: ``otelgate sink --profile dynatrace`` of this tree (``--workers auto``), and ``new-w2`` with 2 decode
  workers (the multi-core path; auto starts none on 2 cores);
- ``old``: the same command run from a temporary ``git worktree`` of ``--old-ref`` (the last commit before the
  compact store), created under the temp dir and removed afterwards;
- ``peer``: the OpenTelemetry Collector's own OTLP/HTTP receiver in otelgate's collector build (the distribution
  ``nox -s collector`` builds) with a ``debug`` exporter at ``verbosity: basic`` (one log line per batch), i.e. the
  receiver's decode and nothing else; skipped with a note when no collector binary is found.
- ``bare``: in this process, no HTTP: ``prepare_spans`` (decode + the walk over every span that ingest does now) and
  decode + normalize every span into dicts + the span rules (what the old sink did per request).

Targets take turns within each round, so load from other jobs hits all of them alike; min/median/max over rounds
are printed. Memory: a fresh ``new`` and ``old`` sink (no workers, default cap 100,000) each receive 3x the cap of
Kong-like spans; (RSS after - RSS before) / stored spans is the cost per stored span. Results go to ``--out``
(markdown, quoted in the README). Exit status 1 when an acceptance goal is missed (>= 3x old at 512-span batches,
<= 0.5 KB per stored span).
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from otelgate.collector.build import cached_binary
from otelgate.otlp import decode_request, normalize_spans
from otelgate.procs import ManagedProcess, free_port
from otelgate.sink.config import SinkConfig
from otelgate.sink.rules import apply_span_rules, span_window
from otelgate.sink.spanstore import prepare_spans
from otelgate.sink.testing import fake_token, kong_like_batch
from otelgate.sink.workers import auto_workers

REPO = Path(__file__).resolve().parents[1]
# the last commit before the compact span store and the decode workers (issue "the fake Dynatrace never becomes
# the bottleneck of a load run")
DEFAULT_OLD_REF = "26d7457"
KB = 1024


# ------------------------------------------------------------------------------------------------ requests


# ------------------------------------------------------------------------------------------------ senders


def _request_bytes(url: str, body: bytes, headers: dict[str, str]) -> tuple[tuple[str, int], bytes]:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname and parts.port, url
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}",
             *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(body)}", "", ""]
    return (parts.hostname, parts.port), "\r\n".join(lines).encode("latin-1") + body


def _read_response(sock: socket.socket, pending: bytes) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response with a Content-Length body; returns (status, bytes left over)."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        pending += chunk
    head, _, rest = pending.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        rest += chunk
    if status != 200:
        raise RuntimeError(f"answered {status}: {rest[:200]!r}")
    return status, rest[length:]


def _send_for(url: str, body: bytes, headers: dict[str, str], seconds: float) -> tuple[int, float]:
    """In a sender process: POST ``body`` over one keep-alive connection for ``seconds``; (calls, elapsed).

    A minimal HTTP/1.1 client on a raw socket (request bytes built once), so the senders cost little CPU next to
    the server they measure: with httpx the four senders themselves limited the rate on 2 cores.
    """
    address, request = _request_bytes(url, body, headers)
    # a fresh connection per measurement (servers close idle keep-alive connections between turns)
    with socket.create_connection(address, timeout=120) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        calls, started, pending = 0, time.perf_counter(), b""
        while calls < 2 or time.perf_counter() - started < seconds:
            sock.sendall(request)
            _status, pending = _read_response(sock, pending)
            calls += 1
        return calls, time.perf_counter() - started


def http_rate(senders: ProcessPoolExecutor, count: int, url: str, body: bytes, headers: dict[str, str],
              spans: int, seconds: float) -> float:
    futures = [senders.submit(_send_for, url, body, headers, seconds) for _ in range(count)]
    results = [f.result(timeout=seconds + 120) for f in futures]
    return sum(calls for calls, _ in results) * spans / max(elapsed for _, elapsed in results)


def bare_rate(action: Callable[[], Any], spans: int, seconds: float) -> float:
    calls, started = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - started < seconds:
        action()
        calls += 1
    return calls * spans / (time.perf_counter() - started)


def old_ingest(body: bytes, config: SinkConfig) -> Any:
    """What the old sink did per request: decode, normalize every span into dicts, apply the span rules."""
    return apply_span_rules(normalize_spans(decode_request("traces", body, "protobuf"), time.time()), config)


# ------------------------------------------------------------------------------------------------ targets


@dataclass
class Target:
    name: str
    process: ManagedProcess
    url: str  # the traces endpoint
    headers: dict[str, str]
    probe: Callable[[], bool]
    rates: dict[int, list[float]] = field(default_factory=dict)

    def start(self) -> Target:
        self.process.start()
        self.process.wait_ready(self.probe, f"{self.url} accepts an empty traces request", timeout=60)
        return self

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)


def _empty_request_ok(url: str, headers: dict[str, str]) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return httpx.post(url, content=b"", headers=headers, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    return probe


def sink_target(name: str, tree: Path, token: str, workdir: Path, *extra: str) -> Target:
    port = free_port()
    env = {**os.environ, "DT_API_TOKEN": token, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", "otelgate", "sink", "--port", str(port), *extra]
    process = ManagedProcess(f"sink:{name}", argv, workdir / f"{name}.log", env=env, cwd=tree)
    url = f"http://127.0.0.1:{port}/api/v2/otlp/v1/traces"
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Api-Token {token}"}
    return Target(name, process, url, headers, _empty_request_ok(url, headers))


def peer_target(binary: Path, workdir: Path) -> Target:
    port = free_port()
    config = workdir / "peer.yaml"
    config.write_text(f"""receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
""")
    process = ManagedProcess("peer", [str(binary), "--config", str(config)], workdir / "peer.log")
    url = f"http://127.0.0.1:{port}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}
    return Target("peer", process, url, headers, _empty_request_ok(url, headers))


@contextmanager
def old_tree(ref: str) -> Iterator[Path]:
    """A temporary worktree of ``ref`` (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="otelgate-old-sink-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref], check=True,
                   capture_output=True, timeout=120)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False,
                       capture_output=True, timeout=120)


def check_imports_from(tree: Path) -> None:
    """The old sink must really run the old code, not this tree's editable install."""
    found = subprocess.run([sys.executable, "-c", "import otelgate; print(otelgate.__file__)"], cwd=tree,
                           env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, timeout=60,
                           check=True).stdout.strip()
    if not found.startswith(str(tree)):
        raise SystemExit(f"the old tree {tree} imports otelgate from {found}; refusing to compare")


# ------------------------------------------------------------------------------------------------ memory


def memory_per_span(target: Target, cap: int, batch: bytes, spans_per_batch: int) -> dict[str, float]:
    """RSS growth per stored span after 3x the cap of spans; the target has default cap ``cap``, no workers."""
    with _running(target):
        client = httpx.Client(timeout=60)
        client.post(target.url, content=batch, headers=target.headers)  # warm: imports, first-request paths
        base_url = target.url.split("/api/", 1)[0]
        client.post(f"{base_url}/api/reset")
        time.sleep(0.5)
        before = target.rss()
        for _ in range(3 * cap // spans_per_batch + 1):
            client.post(target.url, content=batch, headers=target.headers)
        time.sleep(0.5)
        after = target.rss()
        stored = int(client.get(f"{base_url}/healthz").json()["store"]["spans"])
        client.close()
    return {"rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20, "stored": stored,
            "bytes_per_span": (after - before) / stored, "wire_bytes_per_span": len(batch) / spans_per_batch}


@contextmanager
def _running(target: Target) -> Iterator[Target]:
    target.start()
    try:
        yield target
    finally:
        target.process.stop()


# ------------------------------------------------------------------------------------------------ report


def head_commit() -> str:
    found = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           timeout=30, check=False)
    return found.stdout.strip() or "unknown commit"


def summary(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def render(args: argparse.Namespace, batches: list[int], targets: list[Target], bare: dict[str, dict[int, list[float]]],
           memory: dict[str, dict[str, float]], loads: tuple[tuple[float, ...], tuple[float, ...]],
           notes: list[str], workers: int) -> tuple[str, bool]:
    lines = [f"# Sink ingest benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"`python benchmarks/sink_ingest.py --rounds {args.rounds} --seconds {args.seconds} "
             f"--batches {args.batches} --senders {args.senders}` at `{head_commit()}`; old = `{args.old_ref}`; "
             f"{os.cpu_count()} cores; `new` ran with {workers} decode worker(s); load average "
             f"{loads[0][0]:.1f} before, {loads[1][0]:.1f} after (other jobs shared the machine).", "",
             "Spans/s over HTTP (Kong-like spans, 8 per trace, protobuf, no compression), min / median / max over "
             "rounds:", "",
             "| target | batch | min | median | max |", "|---|---:|---:|---:|---:|"]
    medians: dict[tuple[str, int], float] = {}
    for batch in batches:
        for target in targets:
            low, mid, high = summary(target.rates[batch])
            medians[(target.name, batch)] = mid
            lines.append(f"| {target.name} | {batch} | {low:,.0f} | {mid:,.0f} | {high:,.0f} |")
        for name, rates in bare.items():
            low, mid, high = summary(rates[batch])
            medians[(name, batch)] = mid
            lines.append(f"| {name} (no HTTP) | {batch} | {low:,.0f} | {mid:,.0f} | {high:,.0f} |")
    lines += ["", "Ratios of medians:", "", "| batch | new / old | new / peer | new / bare decode+walk |"
              " new-w2 / new |", "|---:|---:|---:|---:|---:|"]
    names = {t.name for t in targets}
    for batch in batches:
        def ratio(a: str, b: str, batch: int = batch) -> str:
            return f"{medians[(a, batch)] / medians[(b, batch)]:.2f}" if (a, batch) in medians and \
                (b, batch) in medians else "n/a"
        lines.append(f"| {batch} | {ratio('new', 'old')} | {ratio('new', 'peer')} | {ratio('new', 'bare decode+walk')}"
                     f" | {ratio('new-w2', 'new')} |")
    lines += ["", "Memory per stored span (RSS of the sink process, no workers, cap 100,000, after 300,000 spans):",
              "", "| sink | RSS before | RSS after | stored | bytes/span | wire bytes/span |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, m in memory.items():
        lines.append(f"| {name} | {m['rss_before_mb']:.0f} MB | {m['rss_after_mb']:.0f} MB | {m['stored']:,.0f} | "
                     f"{m['bytes_per_span']:,.0f} | {m['wire_bytes_per_span']:.0f} |")
    speedup = medians.get(("new", 512), 0) / medians.get(("old", 512), float("inf")) if "old" in names else 0
    per_span = memory["new"]["bytes_per_span"] if "new" in memory else None
    memory_verdict = ("not measured (--no-memory)" if per_span is None
                      else f"{'met' if per_span <= 512 else 'NOT met'} ({per_span:,.0f} B)")
    ok = speedup >= 3 and (per_span is None or per_span <= 512)
    lines += ["", f"Acceptance: new >= 3x old at 512-span batches: {'met' if speedup >= 3 else 'NOT met'} "
              f"({speedup:.2f}x); <= 0.5 KB per stored span: {memory_verdict}."]
    lines += [f"Note: {note}" for note in notes]
    return "\n".join(lines) + "\n", ok


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument("--batches", default="512,8192")
    parser.add_argument("--senders", type=int, default=4, help="sender processes, one keep-alive connection each")
    parser.add_argument("--old-ref", default=DEFAULT_OLD_REF)
    parser.add_argument("--workers", default="auto", help="decode workers of the new sink (number or auto)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "sink_ingest.md")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    workers = auto_workers() if args.workers == "auto" else int(args.workers)
    token = fake_token()
    notes: list[str] = []
    loads_before = os.getloadavg()
    bodies = {batch: kong_like_batch(batch) for batch in batches}
    workdir = Path(tempfile.mkdtemp(prefix="otelgate-bench-"))

    with old_tree(args.old_ref) as old, ProcessPoolExecutor(
            args.senders, mp_context=multiprocessing.get_context("spawn")) as senders:
        check_imports_from(old)
        targets = [sink_target("new", REPO, token, workdir, "--workers", str(workers)),
                   sink_target("new-w2", REPO, token, workdir, "--workers", "2"),
                   sink_target("old", old, token, workdir)]
        binary = cached_binary()
        if binary is None:
            notes.append("no collector build in the cache (nox -s collector): the peer was not measured")
        else:
            targets.append(peer_target(binary, workdir))
        bare: dict[str, dict[int, list[float]]] = {"bare decode+walk": {}, "bare decode+normalize+rules": {}}
        config = SinkConfig(profile="dynatrace", token=token)
        started: list[Target] = []
        try:
            for target in targets:
                started.append(target.start())
            for batch in batches:
                body = bodies[batch]
                for target in targets:
                    http_rate(senders, args.senders, target.url, body, target.headers, batch, 0.5)  # warm-up
                    target.rates[batch] = []
                for name in bare:
                    bare[name][batch] = []
                for round_number in range(args.rounds):
                    order = targets[round_number % len(targets):] + targets[:round_number % len(targets)]
                    for target in order:
                        target.rates[batch].append(http_rate(senders, args.senders, target.url, body,
                                                             target.headers, batch, args.seconds))
                    window = span_window(config)
                    assert window is not None
                    bare["bare decode+walk"][batch].append(bare_rate(
                        functools.partial(prepare_spans, body, *window), batch, args.seconds / 2))
                    bare["bare decode+normalize+rules"][batch].append(bare_rate(
                        functools.partial(old_ingest, body, config), batch, args.seconds / 2))
                    print(f"batch {batch} round {round_number + 1}: " + ", ".join(
                        f"{t.name} {t.rates[batch][-1]:,.0f}" for t in targets), flush=True)
        finally:
            for target in started:
                target.process.stop()

        memory: dict[str, dict[str, float]] = {}
        if not args.no_memory:
            for name, tree in (("new", REPO), ("old", old)):
                target = sink_target(f"{name}-memory", tree, token, workdir,
                                     *(("--workers", "0") if name == "new" else ()))
                memory[name] = memory_per_span(target, 100_000, bodies[min(batches)], min(batches))
                print(f"memory {name}: {memory[name]['bytes_per_span']:,.0f} bytes per stored span", flush=True)

    text, ok = render(args, batches, targets, bare, memory, (loads_before, os.getloadavg()), notes, workers)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
