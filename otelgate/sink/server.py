"""Run the sink: in-process (uvicorn in a thread, for tests) or as a subprocess (``otelgate sink``)."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from otelgate.procs import ManagedProcess, free_port
from otelgate.sink.app import SinkState, create_app
from otelgate.sink.client import SinkClient
from otelgate.sink.config import ProfileName, SinkConfig
from otelgate.waiting import poll_until


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                          server_header=False, timeout_keep_alive=30)


def bound_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket; binding here (not in uvicorn) lets port 0 pick a free port without a race.

    The protocol must be given as ``IPPROTO_TCP``: asyncio sets ``TCP_NODELAY`` on accepted connections only when
    ``sock.proto == IPPROTO_TCP`` (asyncio/base_events.py ``_set_nodelay``), and a socket made with proto 0 left
    Nagle on. Then every response with a body (all refusals; a 200 has none) went out as two writes, headers and
    body, and the body waited for the client's delayed ACK: 40+ ms per 4xx on a keep-alive connection. Linux also
    copies ``TCP_NODELAY`` from the listening socket to accepted ones, so it is set here too.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def otlp_endpoint(url: str, profile: str) -> str:
    """What an otlphttp exporter's ``endpoint`` should be (it appends /v1/traces etc.)."""
    return f"{url}/api/v2/otlp" if profile == "dynatrace" else url


class SinkServer:
    """The sink in this process, on a free port of 127.0.0.1 unless told otherwise.

    ``SinkServer(profile="dynatrace", token="...")`` — further keyword arguments are :class:`SinkConfig` fields
    (``max_items``, ``size_limits``, ``too_many_points``, ...). ``.store`` gives direct (thread-safe) access.
    """

    def __init__(self, profile: ProfileName = "dynatrace", token: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, **settings: Any) -> None:
        self.config = SinkConfig(profile=profile, token=token, **settings)
        self.app, self.state = create_app(self.config)
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client: SinkClient | None = None

    def __repr__(self) -> str:
        return f"SinkServer(profile={self.config.profile!r}, url={self.url if self.port else None!r})"

    @property
    def store(self) -> Any:
        return self.state.store

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the sink is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        return otlp_endpoint(self.url, self.config.profile)

    def signal_url(self, signal: str) -> str:
        return f"{self.otlp_endpoint}/v1/{signal}"

    @property
    def client(self) -> SinkClient:
        if self._client is None:
            self._client = SinkClient(self.url)
        return self._client

    def start(self, timeout: float = 10.0) -> SinkServer:
        if self._thread is not None:
            raise RuntimeError("the sink is already started")
        self.state.preparer.start()
        sock = bound_socket(self.host, self._requested_port)
        self.port = int(sock.getsockname()[1])
        server = uvicorn.Server(uvicorn_config(self.app, self.host, self.port))
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name=f"otelgate-sink-{self.port}", daemon=True)
        self._thread.start()
        thread = self._thread

        def started() -> bool:
            if not thread.is_alive():
                raise RuntimeError(f"the sink thread on port {self.port} exited during start-up")
            return bool(server.started)

        poll_until(started, bool, what=f"the sink to listen on {self.url}", timeout=timeout, interval=0.02,
                   retry_on=())
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        if self._client is not None:
            self._client.close()
            self._client = None
        self.state.preparer.close()
        self._server = None
        self._thread = None

    def __enter__(self) -> SinkServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SinkProcess:
    """``otelgate sink`` as a child process (own process group, output in ``log_path``).

    The token travels in the environment variable ``token_env``, never on the command line.
    """

    def __init__(self, log_path: Path, profile: ProfileName = "dynatrace", token: str | None = None,
                 host: str = "127.0.0.1", port: int | None = None, token_env: str = "DT_API_TOKEN",
                 extra_args: list[str] | None = None) -> None:
        self.profile = profile
        self.host = host
        self.port = port or free_port(host)
        env = dict(os.environ)
        if token is not None:
            env[token_env] = token
        argv = [sys.executable, "-m", "otelgate", "sink", "--host", host, "--port", str(self.port),
                "--profile", profile, "--token-env", token_env, *(extra_args or [])]
        self.process = ManagedProcess(f"sink:{self.port}", argv, log_path, env=env)
        self._client: SinkClient | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        return otlp_endpoint(self.url, self.profile)

    @property
    def client(self) -> SinkClient:
        if self._client is None:
            self._client = SinkClient(self.url)
        return self._client

    def start(self, timeout: float = 20.0) -> SinkProcess:
        self.process.start()

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        self.process.wait_ready(healthy, f"GET {self.url}/healthz answers 200", timeout)
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.process.stop()

    def __enter__(self) -> SinkProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["SinkProcess", "SinkServer", "SinkState", "otlp_endpoint"]
