"""One simulated Kong node (the Kong simulator is a TEST DOUBLE of Kong 3.9, not Kong): its identity, kong.conf
tracing settings, the loaded declarative config with its plugin runtimes, and the Prometheus shared dict.

A config reload builds and validates the complete new runtime (including compiling every ``custom_fields_by_lua``
snippet) before it is swapped in; a bad config leaves the running one untouched. As in Kong, a reload loses nothing
already logged: the OTel queue is keyed by plugin id and survives the reload (Kong/kong@3.9.1
kong/tools/queue.lua:205-216, a queue whose plugin is gone drains and then ends: :244-251), and tcp-log lines already
handed to the sender go out with the configuration they were logged under (tcp-log handler.lua:79 passes ``conf``
to the timer).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otelgate import kongconfig
from otelgate.kongsim.prometheus import NodeStats, Registry
from otelgate.kongsim.tcplog import LuaCompileError, LuaCustomFields, TcpLogSender
from otelgate.kongsim.tracing import SpanExporter, parse_instrumentations

log = logging.getLogger("otelgate.kongsim")


@dataclass
class Runtime:
    """A loaded declarative config and the long-lived parts of its plugins."""

    config: kongconfig.KongConfig
    doc: Mapping[str, Any]
    otel: kongconfig.Plugin | None = None
    otel_exporter: SpanExporter | None = None
    prometheus: kongconfig.Plugin | None = None
    tcp_log: kongconfig.Plugin | None = None
    tcp_sender: TcpLogSender | None = None
    lua_fields: LuaCustomFields | None = None

    def start(self) -> None:
        if self.otel_exporter:
            self.otel_exporter.start()
        if self.tcp_sender:
            self.tcp_sender.start()

    async def close(self, flush_timeout: float | None = 2.0) -> None:
        if self.otel_exporter:
            await self.otel_exporter.flush(flush_timeout)
            await self.otel_exporter.close()
        if self.tcp_sender:
            await self.tcp_sender.flush(flush_timeout)
            await self.tcp_sender.close()


def queue_key(plugin: kongconfig.Plugin) -> str:
    """``<workspace id>.<plugin id>:traces`` (queue.lua:98-100, opentelemetry/traces.lua:161-162)."""
    return f"{kongconfig.DEFAULT_WORKSPACE_ID}.{plugin.id}:traces"


def build_runtime(doc: Mapping[str, Any], node_id: str, source: str,
                  running: Runtime | None = None) -> Runtime:
    """Validate ``doc`` and prepare (not start) its runtime. Raises :class:`kongconfig.KongConfigError`.
    With the ``running`` runtime given, its OTel queue is kept when the plugin id is the same (its handler
    configuration is replaced), and its tcp-log sender when host, port, timeout and keepalive are the same."""
    config = kongconfig.parse(doc, source)
    runtime = Runtime(config=config, doc=doc)
    runtime.otel = config.plugin("opentelemetry")
    if runtime.otel:
        old = running.otel_exporter if running and running.otel else None
        if old is not None and running is not None and running.otel is not None \
                and queue_key(running.otel) == queue_key(runtime.otel):
            runtime.otel_exporter = old  # configure() happens at the swap, once the whole runtime is valid
        else:
            runtime.otel_exporter = SpanExporter(runtime.otel.config, node_id)
    runtime.prometheus = config.plugin("prometheus")
    runtime.tcp_log = config.plugin("tcp-log")
    if runtime.tcp_log:
        conf = runtime.tcp_log.config
        try:
            runtime.lua_fields = LuaCustomFields(conf.get("custom_fields_by_lua") or {})
        except LuaCompileError as exc:
            raise kongconfig.KongConfigError([f"plugins[tcp-log].config.{exc}"], source) from exc
        sender_key = (conf["host"], conf["port"], conf["timeout"], conf["keepalive"])
        old_sender = running.tcp_sender if running else None
        if old_sender is not None and old_sender.key == sender_key:
            runtime.tcp_sender = old_sender  # the same pool: the kept-alive connection survives the reload
        else:
            runtime.tcp_sender = TcpLogSender(*sender_key)
    return runtime


@dataclass
class Counters:
    total_requests: int = 0
    active: int = 0
    # telemetry lost by exporters and senders a reload retired (the current ones count their own)
    retired_dropped_spans: int = 0
    retired_lost_log_lines: int = 0
    in_flight_log_tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Node:
    """The simulated node. ``runtime`` is replaced atomically on reload; requests keep the one they started with."""

    def __init__(self, *, tracing_instrumentations: str = "off", tracing_sampling_rate: float = 0.01,
                 node_id: str | None = None) -> None:
        self.node_id = node_id or str(uuid.uuid4())
        self.instrumentations = parse_instrumentations(tracing_instrumentations)
        if not 0 <= tracing_sampling_rate <= 1:
            raise ValueError(f"tracing_sampling_rate must be within 0..1, got {tracing_sampling_rate}")
        self.tracing_sampling_rate = tracing_sampling_rate
        self.registry = Registry(self.node_id)
        self.counters = Counters()
        self.runtime: Runtime | None = None
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    async def load(self, doc: Mapping[str, Any], source: str = "kong.yaml") -> Runtime:
        """Validate, start the new runtime, swap it in; the old runtime's queues that were not kept drain in the
        background (nothing already logged is dropped by a reload)."""
        async with self._reload_lock:
            old = self.runtime
            runtime = build_runtime(doc, self.node_id, source, running=old)
            if runtime.otel is not None and runtime.otel_exporter is not None and old is not None \
                    and runtime.otel_exporter is old.otel_exporter:
                runtime.otel_exporter.configure(runtime.otel.config, self.node_id)
            runtime.start()
            self.runtime = runtime
            log.info("loaded declarative config %s (hash %s)", source,
                     runtime.config.config_hash)
        if old is not None:
            retired = Runtime(config=old.config, doc=old.doc,
                              otel_exporter=old.otel_exporter if old.otel_exporter is not runtime.otel_exporter
                              else None,
                              tcp_sender=old.tcp_sender if old.tcp_sender is not runtime.tcp_sender else None)
            task = asyncio.get_running_loop().create_task(self._retire(retired))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return runtime

    async def _retire(self, old: Runtime) -> None:
        # log phases still running for the old config may hand it more entries; then it drains completely
        if self.counters.in_flight_log_tasks:
            await asyncio.wait(list(self.counters.in_flight_log_tasks), timeout=5.0)
        await old.close(flush_timeout=None)
        # `old` holds only the parts the new runtime did not keep: each is counted once
        self.counters.retired_dropped_spans += old.otel_exporter.dropped_spans if old.otel_exporter else 0
        self.counters.retired_lost_log_lines += old.tcp_sender.lost_lines if old.tcp_sender else 0

    def losses(self) -> dict[str, int]:
        """Telemetry this node lost since it started: spans its exporters dropped (full queue, failed sends, a
        retired config) and tcp-log lines its senders could not deliver. Kong only logs these; the simulator also
        counts them, for its status API and a stack's diagnostics."""
        runtime = self.runtime
        spans = runtime.otel_exporter.dropped_spans if runtime and runtime.otel_exporter else 0
        lines = runtime.tcp_sender.lost_lines if runtime and runtime.tcp_sender else 0
        return {"spans_dropped": self.counters.retired_dropped_spans + spans,
                "log_lines_lost": self.counters.retired_lost_log_lines + lines}

    def stats(self) -> NodeStats:
        pending = 0
        if self.runtime:
            pending += self.runtime.otel_exporter.pending() if self.runtime.otel_exporter else 0
            pending += self.runtime.tcp_sender.pending() if self.runtime.tcp_sender else 0
        return NodeStats(connections_accepted=self.counters.total_requests, connections_active=self.counters.active,
                         total_requests=self.counters.total_requests,
                         timers_running=len(self.counters.in_flight_log_tasks), timers_pending=pending)

    def metrics_text(self) -> str:
        enabled = bool(self.runtime and self.runtime.prometheus)
        return self.registry.exposition(self.stats(), plugin_enabled=enabled)

    async def close(self) -> None:
        if self.counters.in_flight_log_tasks:
            await asyncio.wait(list(self.counters.in_flight_log_tasks), timeout=2.0)
        for task in list(self._retiring):
            task.cancel()
        if self._retiring:
            await asyncio.wait(list(self._retiring), timeout=2.0)
        if self.runtime:
            await self.runtime.close()
