"""One simulated Kong node (the Kong simulator is a TEST DOUBLE of Kong 3.9, not Kong): its identity, kong.conf
tracing settings, the loaded declarative config with its plugin runtimes, and the Prometheus shared dict.

A config reload builds and validates the complete new runtime (including compiling every ``custom_fields_by_lua``
snippet) before it is swapped in; a bad config leaves the running one untouched.
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

    async def close(self, flush_timeout: float = 2.0) -> None:
        if self.otel_exporter:
            await self.otel_exporter.flush(flush_timeout)
            await self.otel_exporter.close()
        if self.tcp_sender:
            await self.tcp_sender.flush(flush_timeout)
            await self.tcp_sender.close()


def build_runtime(doc: Mapping[str, Any], node_id: str, source: str) -> Runtime:
    """Validate ``doc`` and prepare (not start) its runtime. Raises :class:`kongconfig.KongConfigError`."""
    config = kongconfig.parse(doc, source)
    runtime = Runtime(config=config, doc=doc)
    runtime.otel = config.plugin("opentelemetry")
    if runtime.otel:
        runtime.otel_exporter = SpanExporter(runtime.otel.config, node_id)
    runtime.prometheus = config.plugin("prometheus")
    runtime.tcp_log = config.plugin("tcp-log")
    if runtime.tcp_log:
        conf = runtime.tcp_log.config
        try:
            runtime.lua_fields = LuaCustomFields(conf.get("custom_fields_by_lua") or {})
        except LuaCompileError as exc:
            raise kongconfig.KongConfigError([f"plugins[tcp-log].config.{exc}"], source) from exc
        runtime.tcp_sender = TcpLogSender(conf["host"], conf["port"], conf["timeout"], conf["keepalive"])
    return runtime


@dataclass
class Counters:
    total_requests: int = 0
    active: int = 0
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

    async def load(self, doc: Mapping[str, Any], source: str = "kong.yaml") -> Runtime:
        """Validate, start the new runtime, swap it in, then retire the old one (flushing its queues)."""
        async with self._reload_lock:
            runtime = build_runtime(doc, self.node_id, source)
            runtime.start()
            old, self.runtime = self.runtime, runtime
            log.info("loaded declarative config %s (hash %s)", source,
                     runtime.config.config_hash)
        if old is not None:
            # let log phases already running for the old config finish before its queues are flushed and closed
            if self.counters.in_flight_log_tasks:
                await asyncio.wait(list(self.counters.in_flight_log_tasks), timeout=2.0)
            await old.close()
        return runtime

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
        if self.runtime:
            await self.runtime.close()
