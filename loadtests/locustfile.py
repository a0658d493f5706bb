"""locust users that drive the gateway's routes, for otelgate's sampling-rate sweep (and any ad-hoc load run).

Every option is a locust custom argument with an environment variable, so the same file runs under the sweep, by
hand (``locust -f loadtests/locustfile.py --host http://127.0.0.1:PORT``), distributed (master and workers on several
machines; the master hands its options to the workers) or as a Kubernetes Job (manifests/load/):

- ``--route-weights`` / ``OTELGATE_ROUTE_WEIGHTS``: ``coupon=2,inventory=1,pricing=1`` (relative weights)
- ``--think-min`` / ``--think-max`` (``OTELGATE_THINK_MIN`` / ``_MAX``): think time between requests, seconds
- ``--request-timeout`` / ``OTELGATE_REQUEST_TIMEOUT``: connect and network timeout of every request, seconds
- ``--request-log-dir`` / ``OTELGATE_REQUEST_LOG_DIR``: if set, every response is appended to
  ``<dir>/requests-<host>-<pid>.tsv`` as ``x_kong_request_id<TAB>status<TAB>latency_ms<TAB>route<TAB>ok``, one file
  per locust process, so the sweep can join what the client sent with what the sink received.

It imports the locust-free ``loadtests`` package (routes, weight syntax): run it with the repository root (or the
folder holding ``loadtests/``) on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path
from typing import IO, Any

import gevent
from locust import FastHttpUser, events, task
from locust.env import Environment

from loadtests import DEFAULT_ROUTE_WEIGHTS, ROUTES, parse_weights

REQUEST_ID_HEADER = "X-Kong-Request-Id"


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--route-weights", type=str, env_var="OTELGATE_ROUTE_WEIGHTS",
                        default=DEFAULT_ROUTE_WEIGHTS,
                        help=f"relative weights of the routes {sorted(ROUTES)}, e.g. coupon=2,inventory=1,pricing=1")
    parser.add_argument("--think-min", type=float, env_var="OTELGATE_THINK_MIN", default=0.5,
                        help="shortest think time between two requests of one user, seconds")
    parser.add_argument("--think-max", type=float, env_var="OTELGATE_THINK_MAX", default=1.5,
                        help="longest think time between two requests of one user, seconds")
    parser.add_argument("--request-timeout", type=float, env_var="OTELGATE_REQUEST_TIMEOUT", default=10.0,
                        help="connect and network timeout of every request, seconds")
    parser.add_argument("--request-log-dir", type=str, env_var="OTELGATE_REQUEST_LOG_DIR", default="",
                        help="append every response (X-Kong-Request-Id, status, latency) to a file per process here")


def check_options(options: Any) -> None:
    """Bad options stop locust before any user starts, with one clear line (not a traceback per user)."""
    parse_weights(options.route_weights)
    if not 0 <= options.think_min <= options.think_max:
        raise ValueError(f"think time: need 0 <= --think-min ({options.think_min}) <= --think-max "
                         f"({options.think_max})")
    if not options.request_timeout > 0:
        raise ValueError(f"--request-timeout must be positive, got {options.request_timeout}")


@events.init.add_listener
def _check_options_at_start(environment: Environment, **_kwargs: Any) -> None:
    # locust sets its --run-time timer right after this event, with gevent.spawn_later, which counts from the event
    # loop's cached clock. Nothing has run the loop since it was created before the (slow, on a loaded machine)
    # imports, so that clock can be seconds old and the run would end that much early; refresh it here.
    gevent.get_hub().loop.update_now()
    if environment.parsed_options is not None:
        try:
            check_options(environment.parsed_options)
        except ValueError as exc:
            raise SystemExit(f"error: loadtests/locustfile.py: {exc}") from None


class RequestLog:
    """One tab-separated file per locust process; opened on the first request, flushed when the test stops."""

    def __init__(self) -> None:
        self._file: IO[str] | None = None

    def write(self, directory: str, fields: tuple[str, ...]) -> None:
        if self._file is None:
            folder = Path(directory)
            folder.mkdir(parents=True, exist_ok=True)
            self._file = (folder / f"requests-{socket.gethostname()}-{os.getpid()}.tsv").open(
                "a", encoding="utf-8", buffering=1 << 16)
        self._file.write("\t".join(fields) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


REQUEST_LOG = RequestLog()


def _options(environment: Environment) -> Any:
    options = environment.parsed_options
    if options is None:  # used as a library without a parser: defaults
        raise RuntimeError("loadtests.locustfile needs locust's parsed options (run it with the locust command)")
    return options


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, response_length: int, response: Any = None,
            context: Any = None, exception: BaseException | None = None, **_kwargs: Any) -> None:
    directory = getattr(GatewayUser.log_options, "request_log_dir", "")
    if not directory:
        return
    headers = getattr(response, "headers", None)
    request_id = (headers.get(REQUEST_ID_HEADER) if headers is not None else None) or ""
    status = int(getattr(response, "status_code", 0) or 0)
    REQUEST_LOG.write(directory, (request_id, str(status), f"{response_time:.3f}", name,
                                  "1" if exception is None else "0"))


@events.test_stop.add_listener
def _flush_on_stop(**_kwargs: Any) -> None:
    REQUEST_LOG.flush()


@events.quitting.add_listener
def _close_on_quit(**_kwargs: Any) -> None:
    REQUEST_LOG.close()


class GatewayUser(FastHttpUser):
    """A client of the gateway: picks a route by weight, GETs it with a timeout, thinks, repeats."""

    log_options: Any = None  # the parsed options of this process, read by the request listener

    def __init__(self, environment: Environment) -> None:
        options = _options(environment)
        # instance attributes read by FastHttpUser.__init__ when it builds the client: no request without a timeout
        self.network_timeout = options.request_timeout
        self.connection_timeout = options.request_timeout
        super().__init__(environment)
        check_options(options)  # on a worker the master's options arrive after init: check them again
        weights = parse_weights(options.route_weights)
        self._routes = [name for name in ROUTES if weights.get(name, 0) > 0]
        self._weights = [weights[name] for name in self._routes]
        self._think = (options.think_min, options.think_max)
        GatewayUser.log_options = options

    def wait_time(self) -> float:
        return random.uniform(*self._think)

    @task
    def call_a_route(self) -> None:
        route = random.choices(self._routes, weights=self._weights)[0]
        # failures (status >= 400, timeouts, refused connections) are recorded by locust and by _record
        self.client.get(ROUTES[route], name=route)
