"""Running the Kong simulator (a TEST DOUBLE of Kong 3.9 for the local stack, not Kong): three listeners (proxy,
Status API, Admin API) on one event loop, as a process (``python -m otelgate.kongsim``) or on a background thread
(:class:`SimulatorThread`, for fast in-process tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn

from otelgate.kongsim.admin import admin_app, status_app
from otelgate.kongsim.node import Node
from otelgate.kongsim.proxy import ProxyApp

log = logging.getLogger("otelgate.kongsim")
BANNER = "otelgate Kong simulator: a TEST DOUBLE of Kong 3.9 for the local stack; its output is not evidence about Kong"


class _QuietServer(uvicorn.Server):
    """uvicorn server whose signal handling is left to the simulator (three servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True)
class Listeners:
    host: str
    proxy_port: int
    status_port: int
    admin_port: int

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host}:{self.proxy_port}"

    @property
    def status_url(self) -> str:
        return f"http://{self.host}:{self.status_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"


class Simulator:
    def __init__(self, doc: Mapping[str, Any], listeners: Listeners, *, tracing_sampling_rate: float = 0.01,
                 tracing_instrumentations: str = "off", source: str = "kong.yaml", node_id: str | None = None
                 ) -> None:
        self.doc = doc
        self.listeners = listeners
        self.source = source
        self.node = Node(tracing_instrumentations=tracing_instrumentations,
                         tracing_sampling_rate=tracing_sampling_rate, node_id=node_id)
        self.proxy = ProxyApp(self.node)
        self._servers: list[_QuietServer] = []
        self.started = asyncio.Event()

    def _server(self, app: Any, port: int) -> _QuietServer:
        config = uvicorn.Config(app, host=self.listeners.host, port=port, log_level="warning", access_log=False,
                                lifespan="off", server_header=False, date_header=False, timeout_keep_alive=75)
        return _QuietServer(config)

    def request_stop(self) -> None:
        for server in self._servers:
            server.should_exit = True

    async def serve(self, *, handle_signals: bool = False) -> None:
        try:
            await self.node.load(self.doc, self.source)  # a bad config fails here, before anything listens
        except BaseException:
            await self.proxy.aclose()
            raise
        self._servers = [self._server(self.proxy, self.listeners.proxy_port),
                         self._server(status_app(self.node), self.listeners.status_port),
                         self._server(admin_app(self.node), self.listeners.admin_port)]
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
        tasks = [asyncio.create_task(s.serve()) for s in self._servers]
        try:
            while not all(s.started for s in self._servers):
                if any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.01)
            if all(s.started for s in self._servers):
                log.warning("%s; proxy %s, status %s, admin %s", BANNER, self.listeners.proxy_url,
                            self.listeners.status_url, self.listeners.admin_url)
                self.started.set()
            else:
                self.request_stop()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await self.node.close()
            await self.proxy.aclose()
        failed = [s.config.port for s in self._servers if not s.started]
        if failed:
            raise RuntimeError(f"Kong simulator could not listen on {self.listeners.host} port(s) {failed}")


class SimulatorThread:
    """The simulator on a daemon thread with its own loop: ``start()`` returns once all three ports listen."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()

    @property
    def node(self) -> Node:
        return self.simulator.node

    @property
    def listeners(self) -> Listeners:
        return self.simulator.listeners

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()

        async def runner() -> None:
            serve = asyncio.create_task(self.simulator.serve())
            started = asyncio.create_task(self.simulator.started.wait())
            await asyncio.wait({serve, started}, return_when=asyncio.FIRST_COMPLETED)
            if self.simulator.started.is_set():
                self._ready.set()
            else:
                started.cancel()
            await serve  # a start-up failure raises here; _main records it before releasing start()

        try:
            self._loop.run_until_complete(runner())
        except BaseException as exc:  # reported to the thread that called start()
            self._error = exc
        finally:
            self._ready.set()
            self._loop.close()

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        self._thread = threading.Thread(target=self._main, name="kongsim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"Kong simulator did not start listening within {timeout}s on {self.listeners}")
        if self._error is not None:
            raise self._error
        if not self.simulator.started.is_set():
            raise RuntimeError(f"Kong simulator stopped during start-up on {self.listeners}")
        return self

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the simulator's loop (e.g. ``node.load``) and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.simulator.request_stop)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"Kong simulator thread did not stop within {timeout}s")

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
