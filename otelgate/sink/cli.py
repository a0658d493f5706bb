"""``otelgate sink``: run the fake Dynatrace (or plain OTLP) sink in the foreground.

The API token is read from an environment variable (``--token-env``), never from the command line, and is never
printed or logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from otelgate import topology
from otelgate.sink.app import create_app
from otelgate.sink.config import DEFAULT_MAX_ITEMS, PROFILES, SinkConfig
from otelgate.sink.server import bound_socket, otlp_endpoint, uvicorn_config
from otelgate.sink.workers import auto_workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4318, help="port to bind (default 4318)")
    parser.add_argument("--profile", choices=PROFILES, default="dynatrace",
                        help="dynatrace: Dynatrace's OTLP API and its rules (default); otlp: plain OTLP/HTTP sink")
    token_env = topology.current().token_env
    parser.add_argument("--token-env", default=token_env, metavar="VAR",
                        help="environment variable holding the API token the dynatrace profile accepts "
                             f"(default {token_env}, the deployment's otelgate.toml)")
    parser.add_argument("--max-items", type=int, default=DEFAULT_MAX_ITEMS, metavar="N",
                        help=f"keep at most N spans, N metric points and N log records; older ones are evicted "
                             f"and counted (default {DEFAULT_MAX_ITEMS})")
    parser.add_argument("--too-many-points", choices=("413", "partial_success"), default="413",
                        help="answer to a metrics request over 15,000 data points (default 413)")
    parser.add_argument("--workers", type=_workers, default="auto", metavar="N|auto",
                        help="decode worker processes for large trace requests; the store stays in this process "
                             "(default auto: one per core beyond the event loop's, none on 1-2 cores)")
    parser.add_argument("--report-dropped", action="store_true",
                        help="report spans/logs dropped for their timestamp in partial_success")


def _workers(text: str) -> int:
    if text == "auto":
        return auto_workers()
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    token = os.environ.get(args.token_env) or None
    if args.profile == "dynatrace" and not token:
        print(f"otelgate sink: the dynatrace profile needs an API token. Set the environment variable "
              f"{args.token_env} (or name another one with --token-env), or use --profile otlp for an "
              f"unauthenticated plain OTLP sink.", file=sys.stderr)
        return 2
    try:
        config = SinkConfig(profile=args.profile, token=token if args.profile == "dynatrace" else None,
                            max_items=args.max_items, too_many_points=args.too_many_points,
                            report_dropped_spans=args.report_dropped, report_dropped_logs=args.report_dropped,
                            workers=args.workers)
    except ValueError as exc:
        print(f"otelgate sink: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app, state = create_app(config)
    try:
        sock = bound_socket(args.host, args.port)
    except OSError as exc:
        print(f"otelgate sink: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]  # --port 0 picks a free one; say which
    url = f"http://{args.host}:{port}"
    auth = f"Authorization: Api-Token <value of ${args.token_env}>" if config.is_dynatrace else "no auth"
    print(f"otelgate sink ({config.profile}) on {url}: OTLP endpoint {otlp_endpoint(url, config.profile)} "
          f"({auth}); query API {url}/api/; {config.workers} decode worker(s)", flush=True)
    try:
        state.preparer.start()
        uvicorn.Server(uvicorn_config(app, args.host, port)).run(sockets=[sock])
    finally:
        state.preparer.close()
    return 0
