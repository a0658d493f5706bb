"""Kong 3.9's prometheus plugin exposition, as the Kong simulator (a TEST DOUBLE, not Kong) reproduces it.

Pinned to docs/reference/kong-3.9.md#prometheus (and #status-api) and to the storage model of Kong's bundled
nginx-lua-prometheus: every series is a full key ``name{labels}`` in one dictionary; the exposition sorts all keys
alphabetically and prints ``# HELP`` / ``# TYPE`` before the first key of each family. Consequences that real
Kong shows too and this module keeps:

* histogram ``le`` values are stored zero-padded (``0005.0``) so they sort numerically and are printed without the
  padding (``le="5"``); ``+Inf`` is stored as ``Inf`` so it sorts last;
* a bucket key exists only once an observation fell into it: buckets below the smallest observed value are absent;
* all ``_bucket`` series of a family come before all ``_count`` series, which come before all ``_sum`` series;
* values print like Lua's ``tostring`` (``%.14g``);
* with no prometheus plugin configured only the node / nginx / memory gauges appear.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from otelgate.kongsim.tracing import KONG_VERSION

# exporter.lua (3.9.3)
KONG_LATENCY_BUCKETS = (1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000)
UPSTREAM_LATENCY_BUCKETS = (25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000)

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

# name (without the kong_ prefix) -> (type, HELP, label names)
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "nginx_connections_total": (GAUGE, "Number of connections by subsystem", ("node_id", "subsystem", "state")),
    "nginx_requests_total": (GAUGE, "Number of requests total", ("node_id", "subsystem")),
    "nginx_timers": (GAUGE, "Number of nginx timers", ("state",)),
    "datastore_reachable": (GAUGE, "Datastore reachable from Kong, 0 is unreachable", ()),
    "node_info": (GAUGE, "Kong Node metadata information", ("node_id", "version")),
    "upstream_target_health": (
        GAUGE, "Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, "
        "value is 1 when state is populated.", ("upstream", "target", "address", "state", "subsystem")),
    "memory_workers_lua_vms_bytes": (GAUGE, "Allocated bytes in worker Lua VM", ("node_id", "pid", "kong_subsystem")),
    "memory_lua_shared_dict_bytes": (GAUGE, "Allocated slabs in bytes in a shared_dict",
                                     ("node_id", "shared_dict", "kong_subsystem")),
    "memory_lua_shared_dict_total_bytes": (GAUGE, "Total capacity in bytes of a shared_dict",
                                           ("node_id", "shared_dict", "kong_subsystem")),
    "http_requests_total": (COUNTER, "HTTP status codes per consumer/service/route in Kong",
                            ("service", "route", "code", "source", "workspace", "consumer")),
    "kong_latency_ms": (HISTOGRAM, "Latency added by Kong and enabled plugins for each service/route in Kong",
                        ("service", "route", "workspace")),
    "upstream_latency_ms": (HISTOGRAM, "Latency added by upstream response for each service/route in Kong",
                            ("service", "route", "workspace")),
    "request_latency_ms": (HISTOGRAM, "Total latency incurred during requests for each service/route in Kong",
                           ("service", "route", "workspace")),
    "bandwidth_bytes": (COUNTER, "Total bandwidth (ingress/egress) throughput in bytes",
                        ("service", "route", "direction", "workspace", "consumer")),
    "nginx_metric_errors_total": (COUNTER, "Number of nginx-lua-prometheus errors", ()),
}
BUCKETS = {"kong_latency_ms": KONG_LATENCY_BUCKETS, "upstream_latency_ms": UPSTREAM_LATENCY_BUCKETS,
           "request_latency_ms": UPSTREAM_LATENCY_BUCKETS}
PREFIX = "kong_"

# Kong's default lua_shared_dicts (nginx_kong.lua template) with their default capacities. The allocation figures
# are illustrative constants of this test double, not measurements of Kong.
SHARED_DICTS: dict[str, int] = {
    "kong": 5 << 20, "kong_locks": 8 << 20, "kong_healthchecks": 5 << 20, "kong_cluster_events": 5 << 20,
    "kong_rate_limiting_counters": 12 << 20, "kong_core_db_cache": 128 << 20, "kong_core_db_cache_miss": 12 << 20,
    "kong_db_cache": 128 << 20, "kong_db_cache_miss": 12 << 20, "kong_secrets": 5 << 20,
    "prometheus_metrics": 5 << 20,
}
SHARED_DICT_ALLOCATED = 40960


def lua_number(value: float) -> str:
    """Lua's ``tostring`` of a number (``%.14g``)."""
    return format(value, ".14g")


def _bucket_format(buckets: tuple[float, ...]) -> str:
    """nginx-lua-prometheus ``construct_bucket_format``: enough leading/trailing zeros to sort as strings."""
    max_order, max_precision = 1, 1
    for bucket in buckets:
        as_string = f"{bucket:f}".rstrip("0")
        dot = as_string.index(".")
        max_order = max(max_order, dot)
        max_precision = max(max_precision, len(as_string) - dot - 1)
    return f"%0{max_order + max_precision + 1}.{max_precision}f"


def _escape(value: object) -> str:
    text = value if isinstance(value, str) else lua_number(value) if isinstance(value, float) else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[object, ...]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


def _fix_bucket_label(key: str) -> str:
    """Strip the sort padding from ``le`` and turn ``Inf`` into ``+Inf`` (``fix_histogram_bucket_labels``)."""
    marker = ',le="' if ',le="' in key else '{le="'
    if marker not in key:
        return key
    head, rest = key.split(marker, 1)
    value, tail = rest.split('"', 1)
    shown = "+Inf" if value == "Inf" else lua_number(float(value))
    return f'{head}{marker}{shown}"{tail}'


@dataclass(frozen=True)
class NodeStats:
    """What the scrape-time gauges show (the simulator's own counters, not nginx's)."""

    connections_accepted: int
    connections_active: int
    total_requests: int
    timers_running: int
    timers_pending: int


class Registry:
    """The ``prometheus_metrics`` shared dict of one simulated node. Survives config reloads, like Kong's shm."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.values: dict[str, float] = {"nginx_metric_errors_total": 0.0}
        self._formats = {name: _bucket_format(b) for name, b in BUCKETS.items()}

    def inc(self, family: str, labels: tuple[object, ...], amount: float = 1.0) -> None:
        _typ, _help, names = FAMILIES[family]
        key = family + _labels(names, labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def observe(self, family: str, labels: tuple[object, ...], value: float) -> None:
        _typ, _help, names = FAMILIES[family]
        label_text = _labels(names, labels)
        for suffix, amount in (("_count", 1.0), ("_sum", float(value))):
            key = family + suffix + label_text
            self.values[key] = self.values.get(key, 0.0) + amount
        prefix = family + "_bucket" + (label_text[:-1] + "," if label_text else "{")
        fmt = self._formats[family]
        for bucket in BUCKETS[family]:
            if value <= bucket:  # only buckets the value falls into are created / incremented
                key = f'{prefix}le="{fmt % bucket}"}}'
                self.values[key] = self.values.get(key, 0.0) + 1
        inf_key = f'{prefix}le="Inf"}}'
        self.values[inf_key] = self.values.get(inf_key, 0.0) + 1

    def log(self, conf: Mapping[str, Any], message: Mapping[str, Any], response_source: str) -> None:
        """The plugin's log phase (handler.lua + exporter.lua ``log``), gated exactly as Kong gates it."""
        service = message.get("service") or {}
        service_name = (service.get("name") or service.get("host") or "") if service else ""
        route = message.get("route")
        if not route:
            return  # no route matched: nothing recorded
        route_name = route.get("name") or route.get("id")
        consumer = ""  # per_consumer needs a consumer; the simulator has no auth plugins
        workspace = message.get("workspace_name") or ""
        if conf.get("bandwidth_metrics"):
            ingress = (message.get("request") or {}).get("size")
            egress = (message.get("response") or {}).get("size")
            if ingress and ingress > 0:
                self.inc("bandwidth_bytes", (service_name, route_name, "ingress", workspace, consumer), ingress)
            if egress and egress > 0:
                self.inc("bandwidth_bytes", (service_name, route_name, "egress", workspace, consumer), egress)
        if conf.get("status_code_metrics"):
            status = (message.get("response") or {}).get("status")
            source = "service" if response_source == "service" else "kong"
            self.inc("http_requests_total", (service_name, route_name, status, source, workspace, consumer))
        if conf.get("latency_metrics"):
            latencies = message.get("latencies") or {}
            labels = (service_name, route_name, workspace)
            if latencies.get("request") is not None and latencies["request"] >= 0:
                self.observe("request_latency_ms", labels, latencies["request"])
            if latencies.get("proxy") is not None and latencies["proxy"] >= 0:
                self.observe("upstream_latency_ms", labels, latencies["proxy"])
            if latencies.get("kong") is not None and latencies["kong"] >= 0:
                self.observe("kong_latency_ms", labels, latencies["kong"])

    def _local_gauges(self, stats: NodeStats) -> dict[str, float]:
        node, sub = self.node_id, "http"
        gauges: dict[str, float] = {}

        def put(family: str, labels: tuple[object, ...], value: float) -> None:
            gauges[family + _labels(FAMILIES[family][2], labels)] = float(value)

        for state, value in (("accepted", stats.connections_accepted), ("handled", stats.connections_accepted),
                             ("total", stats.total_requests), ("active", stats.connections_active),
                             ("reading", 0), ("writing", stats.connections_active), ("waiting", 0)):
            put("nginx_connections_total", (node, sub, state), value)
        put("nginx_requests_total", (node, sub), stats.total_requests)
        put("nginx_timers", ("running",), stats.timers_running)
        put("nginx_timers", ("pending",), stats.timers_pending)
        # DB-less: the off connector always connects (docs/reference/kong-3.9.md#metrics-and-labels)
        put("datastore_reachable", (), 1)
        put("node_info", (node, KONG_VERSION), 1)
        for name, capacity in SHARED_DICTS.items():
            put("memory_lua_shared_dict_bytes", (node, name, sub), SHARED_DICT_ALLOCATED)
            put("memory_lua_shared_dict_total_bytes", (node, name, sub), capacity)
        put("memory_workers_lua_vms_bytes", (node, os.getpid(), sub), _rss_bytes())
        return gauges

    def exposition(self, stats: NodeStats, plugin_enabled: bool) -> str:
        """``metric_data``: sorted keys, HELP/TYPE before each family's first key (``local_only`` when the plugin is
        not configured anywhere)."""
        merged = self._local_gauges(stats)
        if plugin_enabled:
            merged.update(self.values)
        lines: list[str] = []
        seen: set[str] = set()
        for key in sorted(merged):
            short = _short_name(key)
            if short not in seen:
                seen.add(short)
                if short in FAMILIES:
                    typ, help_text, _names = FAMILIES[short]
                    lines.append(f"# HELP {PREFIX}{short} {help_text}")
                    lines.append(f"# TYPE {PREFIX}{short} {typ}")
            lines.append(f"{PREFIX}{_fix_bucket_label(key)} {lua_number(merged[key])}")
        return "\n".join(lines) + "\n"


def _short_name(key: str) -> str:
    """``short_metric_name``: the family of a key (``_bucket`` keys map to the histogram's name)."""
    brace = key.find("{")
    if brace < 0:
        return key
    bucket = key.find("_bucket{")
    if bucket >= 0 and "le=" in key[brace + 1:]:
        return key[:bucket]
    return key[:brace]


def _rss_bytes() -> int:
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except Exception:  # pragma: no cover - psutil is a dependency; this only guards odd platforms
        return 0


StatsSource = Callable[[], NodeStats]
