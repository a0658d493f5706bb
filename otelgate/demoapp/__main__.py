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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format=f"%(asctime)s {args.service} %(levelname)s %(name)s: %(message)s")
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
