"""The simulator's status API says how much telemetry it lost (spans its exporters dropped, tcp-log lines its senders
could not deliver), across config reloads that retire an exporter or a sender. Kong itself only logs these losses;
the simulator counts them so a person reading a failed run's diagnostics sees them."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from otelgate import kongconfig
from otelgate.kongsim.admin import status_payload
from otelgate.kongsim.node import Node


def _with_tcp_log_port(doc: dict[str, Any], port: int) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    for plugin in changed["plugins"]:
        if plugin["name"] == "tcp-log":
            plugin["config"]["port"] = port
    return changed


def test_status_counts_losses_of_current_and_retired_senders() -> None:
    doc = kongconfig.load()

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        node = Node()
        try:
            runtime = await node.load(_with_tcp_log_port(doc, 9))
            assert runtime.tcp_sender is not None and runtime.otel_exporter is not None
            runtime.tcp_sender.lost_lines += 3      # as a failed connect does, one per line
            runtime.otel_exporter.dropped_spans += 2
            first = status_payload(node)["otelgate_telemetry_lost"]
            await node.load(_with_tcp_log_port(doc, 10))  # another port: a new sender, the old one retires
            await asyncio.wait(list(node._retiring), timeout=10)
            assert node.runtime is not None and node.runtime.tcp_sender is not None
            node.runtime.tcp_sender.lost_lines += 1
            return first, status_payload(node)["otelgate_telemetry_lost"]
        finally:
            await node.close()

    first, after_reload = asyncio.run(scenario())
    assert first == {"spans_dropped": 2, "log_lines_lost": 3}
    # the exporter was kept across the reload (same endpoint): its 2 count once; the retired sender's 3 stay counted
    assert after_reload == {"spans_dropped": 2, "log_lines_lost": 4}
