"""``python -m otelgate.kongsim`` / ``otelgate kongsim``: run the Kong 3.9 simulator, a TEST DOUBLE of Kong for the
local stack (not Kong; its output is never evidence about real Kong)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from otelgate import kongconfig
from otelgate.kongsim.server import Listeners, Simulator

DESCRIPTION = ("Run otelgate's Kong 3.9 simulator: a TEST DOUBLE of Kong for the local stack, not Kong. It loads a "
               "decK declarative config and serves a proxy, a Status API (/status, /status/ready, /metrics) and an "
               "Admin API (GET /status, POST /config).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = parser.description or DESCRIPTION
    parser.add_argument("--config", type=Path, default=kongconfig.DEFAULT_PATH,
                        help="decK declarative config (_format_version 3.0); default: manifests/kong/kong.yaml")
    parser.add_argument("--host", default="127.0.0.1", help="address all three listeners bind (default 127.0.0.1)")
    parser.add_argument("--proxy-port", type=int, required=True, help="proxy listener port (Kong's 8000)")
    parser.add_argument("--status-port", type=int, required=True, help="Status API port (Kong's status_listen)")
    parser.add_argument("--admin-port", type=int, required=True, help="Admin API port (Kong's admin_listen)")
    parser.add_argument("--tracing-sampling-rate", type=float, default=0.01,
                        help="kong.conf tracing_sampling_rate (Kong's default 0.01)")
    parser.add_argument("--tracing-instrumentations", default="off",
                        help="kong.conf tracing_instrumentations: off, all, or a comma list (Kong's default off)")
    parser.add_argument("--node-id", default=None, help="node UUID (default: random, like a fresh Kong node)")
    parser.add_argument("--log-level", default="INFO", help="Python log level of the simulator (default INFO)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s [kongsim test double] %(message)s")
    for chatty in ("httpx", "httpcore"):  # one INFO line per upstream call and OTLP POST would drown the log
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        doc = kongconfig.load(args.config)
    except (OSError, kongconfig.KongConfigError) as exc:
        print(f"kongsim (test double of Kong): cannot load {args.config}: {exc}", file=sys.stderr)
        return 2
    listeners = Listeners(args.host, args.proxy_port, args.status_port, args.admin_port)
    simulator = Simulator(doc, listeners, tracing_sampling_rate=args.tracing_sampling_rate,
                          tracing_instrumentations=args.tracing_instrumentations, source=str(args.config),
                          node_id=args.node_id)
    try:
        asyncio.run(simulator.serve(handle_signals=True))
    except (RuntimeError, ValueError, kongconfig.KongConfigError) as exc:
        print(f"kongsim (test double of Kong): {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otelgate.kongsim", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
