"""``python -m otelgate.demoapp <service> --port P``: one demo service on a threaded WSGI server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from werkzeug.serving import make_server

from otelgate.demoapp.services import SERVICES, create_app


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m otelgate.demoapp", description=__doc__)
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # a normal interpreter exit runs the atexit hooks, so the instrumentation flushes its last spans
    raise SystemExit(0)


def _log_to_stdout(service: str) -> None:
    """INFO to stdout, beside any handler already on the root logger: the instrumentation attaches its OTLP logging
    handler there at interpreter start (so ``logging.basicConfig`` would do nothing, and ``force=True`` would remove
    it)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    _log_to_stdout(args.service)
    try:
        app = create_app(args.service)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = make_server(args.host, args.port, app, threaded=True)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print(f"{args.service} listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
