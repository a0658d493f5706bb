"""Sink ingest throughput: spans/s over real HTTP next to the bare decode-and-normalize rate, in the same run.

    .venv/bin/python benchmarks/sink_ingest.py [--rounds 5] [--batches 512,8192] [--gzip] [--in-process]

The sink runs as a subprocess (``otelgate sink --profile dynatrace``) unless ``--in-process``; the client sends
pre-serialized ExportTraceServiceRequests one after another over one keep-alive connection. The bare rate is
``decode_request`` + ``normalize_spans`` + the Dynatrace span rules in this process, no HTTP, no store. Goal: the
HTTP rate is at least half the bare rate.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from otelgate.otlp import decode_request, normalize_spans
from otelgate.sink.config import SinkConfig
from otelgate.sink.rules import apply_span_rules
from otelgate.sink.server import SinkProcess, SinkServer
from otelgate.sink.testing import fake_token, new_span_id, new_trace_id, span, traces_request


def build_batch(size: int) -> bytes:
    """``size`` spans shaped like instrumented HTTP server/client spans, ~10 attributes each, 8 spans per trace."""
    spans = []
    trace_id, parent = new_trace_id(), b""
    for i in range(size):
        if i % 8 == 0:
            trace_id, parent = new_trace_id(), b""
        current = span(f"GET /coupon/{i % 16}", trace_id=trace_id, span_id=new_span_id(), parent=parent,
                       attributes={"http.request.method": "GET", "http.route": "/coupon/{id}",
                                   "http.response.status_code": 200, "url.path": f"/coupon/{i}",
                                   "server.address": "coupon.demo.svc", "server.port": 8080,
                                   "network.protocol.version": "1.1", "user_agent.original": "locust/2.30",
                                   "kong.service": "coupon", "sampled": True})
        parent = current.span_id
        spans.append(current)
    request = traces_request(spans, service="coupon", **{"k8s.namespace.name": "demo", "host.name": "node-1"})
    return request.SerializeToString()


def bare_rate(body: bytes, spans_per_batch: int, seconds: float) -> float:
    config = SinkConfig(profile="dynatrace", token="unused")
    return _rate(lambda: apply_span_rules(normalize_spans(decode_request("traces", body, "protobuf"),
                                                          time.time()), config), spans_per_batch, seconds)


def http_rate(clients: list[httpx.Client], url: str, body: bytes, headers: dict[str, str], spans_per_batch: int,
              seconds: float) -> float:
    """Spans/s with one sender per client, like an exporter's parallel queue consumers."""

    def sender(client: httpx.Client) -> tuple[int, float]:
        def send() -> None:
            response = client.post(url, content=body, headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"the sink answered {response.status_code}: {response.content[:200]!r}")

        return _count(send, seconds)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        calls = sum(n for n, _ in pool.map(sender, clients))
    return calls * spans_per_batch / (time.perf_counter() - started)


def _rate(action: Callable[[], Any], items: int, seconds: float) -> float:
    """Items per second over at least ``seconds`` (and at least 3 calls)."""
    calls, elapsed = _count(action, seconds)
    return calls * items / elapsed


def _count(action: Callable[[], Any], seconds: float) -> tuple[int, float]:
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        action()
        calls += 1
    return calls, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="minimum duration of each measurement")
    parser.add_argument("--batches", default="512,8192")
    parser.add_argument("--gzip", action="store_true", help="send gzip-compressed bodies (as the collector does)")
    parser.add_argument("--in-process", action="store_true", help="run the sink in a thread of this process")
    parser.add_argument("--senders", type=int, default=2,
                        help="parallel HTTP senders (an exporter's queue consumers; the collector default is 10)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    token = fake_token()
    log_dir = Path(tempfile.mkdtemp(prefix="otelgate-bench-"))
    sink: SinkServer | SinkProcess
    if args.in_process:
        sink = SinkServer(profile="dynatrace", token=token, max_items=200_000)
    else:
        sink = SinkProcess(log_dir / "sink.log", profile="dynatrace", token=token,
                           extra_args=["--max-items", "200000"])
    sink.start()
    results: list[dict[str, Any]] = []
    try:
        url = f"{sink.otlp_endpoint}/v1/traces"
        headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Api-Token {token}"}
        if args.gzip:
            headers["Content-Encoding"] = "gzip"
        clients = [httpx.Client(timeout=60) for _ in range(args.senders)]
        try:
            for size in (int(s) for s in args.batches.split(",")):
                raw = build_batch(size)
                body = gzip.compress(raw, compresslevel=6) if args.gzip else raw
                http_rate(clients, url, body, headers, size, 0.3)  # warm-up: connection, caches
                bare, over_http = [], []
                for _ in range(args.rounds):
                    sink.client.reset()
                    bare.append(bare_rate(raw, size, args.seconds))
                    over_http.append(http_rate(clients, url, body, headers, size, args.seconds))
                stored = sink.client.stats()["traces"]["items"]
                assert stored > 0, "the sink stored nothing"
                result = {"batch": size, "body_bytes": len(body), "raw_bytes": len(raw), "rounds": args.rounds,
                          "bare_spans_per_s": statistics.median(bare), "http_spans_per_s": statistics.median(over_http),
                          "bare_all": bare, "http_all": over_http}
                result["ratio"] = result["http_spans_per_s"] / result["bare_spans_per_s"]
                results.append(result)
        finally:
            for client in clients:
                client.close()
    finally:
        sink.stop()

    mode = ("in-process" if args.in_process else "subprocess") + (", gzip" if args.gzip else "") + \
        f", {args.senders} sender(s)"
    print(f"sink ingest, dynatrace profile ({mode}), median of {args.rounds} rounds of >= {args.seconds}s")
    print(f"{'batch':>6} {'body':>10} {'bare spans/s':>14} {'HTTP spans/s':>14} {'ratio':>6}")
    for r in results:
        print(f"{r['batch']:>6} {r['body_bytes']:>10} {r['bare_spans_per_s']:>14,.0f} {r['http_spans_per_s']:>14,.0f} "
              f"{r['ratio']:>6.2f}")
    worst = min(r["ratio"] for r in results)
    print(f"goal: HTTP >= 0.5 x bare -> {'met' if worst >= 0.5 else 'NOT met'} (worst ratio {worst:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"mode": mode, "results": results}, indent=2))
    return 0 if worst >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
