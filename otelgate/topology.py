"""The deployment's topology as data: ``otelgate.toml`` in the manifests folder, and the only reader of it.

The routes the suites drive, the services each route's trace must pass, Kong's service name, the deployment name
the collector adds, the demo services, the canary path, the token's environment variable and the metric names the
claims read. A team with other services edits that file (see :mod:`otelgate.paths` for how a folder is chosen),
not constants in code.

    from otelgate import topology
    topo = topology.current()
    topo.route_for("traces").service_path   # ("kong-otel", "coupon", "membership")
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from otelgate import paths

CLAIMS = ("traces", "metrics", "logs", "sampling")
SIGNALS = ("traces", "metrics", "logs")


class TopologyError(ValueError):
    """``otelgate.toml`` is missing, is not TOML, or does not say what otelgate needs (the message says what)."""


@dataclass(frozen=True)
class Route:
    """One route the suites drive through Kong."""

    name: str                           # the key in otelgate.toml, e.g. "coupon" (load-test weights use it)
    kong_route: str                     # the Kong route's name, e.g. "coupon-route" (label on Kong's metrics)
    path: str                           # the request path sent to Kong's proxy, e.g. "/coupon/coupons"
    service_path: tuple[str, ...]       # services the trace passes, Kong's first: ("kong-otel", "coupon", ...)


@dataclass(frozen=True)
class Topology:
    source: Path                        # the file it was read from
    token_env: str
    canary: Route                        # the route a stack's bring-up check sends through Kong
    kong_service_name: str
    deployment_attribute: str
    deployment_env: str
    deployment_names: Mapping[str, str]  # stack name -> value of deployment_attribute on that stack
    demo_services: tuple[str, ...]
    gateway_services: tuple[str, ...]
    routes: Mapping[str, Route]          # by name, in file order
    claim_routes: Mapping[str, str]      # claim -> route name
    request_counter: str
    latency_histogram: str
    route_label: str
    bandwidth_counter: str = "kong_bandwidth_bytes"
    service_request_histogram: str = "http.server.duration"
    # stack name -> demo service -> the signals it exports itself (a stack not listed: traces only)
    service_signals: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    def route_for(self, claim: str) -> Route:
        """The route the claim (``traces``, ``metrics``, ``logs`` or ``sampling``) drives."""
        if claim not in self.claim_routes:
            raise KeyError(f"no claim {claim!r} in {self.source} [claims] (have {sorted(self.claim_routes)})")
        return self.routes[self.claim_routes[claim]]

    def deployment_name(self, stack: str) -> str:
        """The value the collector inserts as :attr:`deployment_attribute` on ``stack``."""
        if stack not in self.deployment_names:
            raise KeyError(f"no deployment name for stack {stack!r} in {self.source} [deployment.names] "
                           f"(have {sorted(self.deployment_names)})")
        return self.deployment_names[stack]

    def exporting(self, stack: str, signal: str, services: Sequence[str]) -> tuple[str, ...]:
        """Those of ``services`` that export ``signal`` themselves on ``stack`` (``[services.signals]``)."""
        if signal not in SIGNALS:
            raise KeyError(f"no signal {signal!r} (have {SIGNALS})")
        declared = self.service_signals.get(stack)
        if declared is None:
            return tuple(s for s in services if signal == "traces")
        return tuple(s for s in services if signal in declared.get(s, ()))

    @property
    def canary_path(self) -> str:
        return self.canary.path

    @property
    def route_paths(self) -> dict[str, str]:
        """Kong route name -> request path, for every route (what a warm-up sends)."""
        return {r.kong_route: r.path for r in self.routes.values()}


class _Table:
    """One TOML table, read field by field: each read checks the type; :meth:`done` refuses unknown keys."""

    def __init__(self, source: Path, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise TopologyError(f"{source}: [{where}] must be a table, got {type(data).__name__}")
        self.source, self.where, self.data, self.read = source, where, data, set[str]()

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise TopologyError(f"{self.source}: {self._name(key)} is missing")
        self.read.add(key)
        return self.data[key]

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise TopologyError(f"{self.source}: {self._name(key)} must be a non-empty string, got {value!r}")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise TopologyError(f"{self.source}: {self._name(key)} must be a non-empty list of strings, "
                                f"got {value!r}")
        return tuple(value)

    def table(self, key: str) -> _Table:
        return _Table(self.source, self._name(key), self._get(key))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise TopologyError(f"{self.source}: unknown key(s) in [{self.where or 'top level'}]: {unknown}")


def _route(source: Path, name: str, table: _Table, kong_service: str) -> Route:
    path = table.text("path")
    if not path.startswith("/"):
        raise TopologyError(f"{source}: routes.{name}.path must start with '/', got {path!r}")
    route = Route(name, table.text("kong_route"), path, (kong_service, *table.texts("upstream_path")))
    table.done()
    return route


def _signals(source: Path, table: _Table, demo: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """One stack's ``service = [signals]`` table: demo services only, known signals only."""
    result: dict[str, tuple[str, ...]] = {}
    for service in list(table.data):
        if service not in demo:
            raise TopologyError(f"{source}: {table.where}.{service} is not in services.demo {list(demo)}")
        signals = table.texts(service)
        unknown = sorted(set(signals) - set(SIGNALS))
        if unknown:
            raise TopologyError(f"{source}: {table.where}.{service}: unknown signal(s) {unknown} (have {SIGNALS})")
        result[service] = signals
    table.done()
    return result


def parse(text: str, source: Path) -> Topology:
    """The topology ``text`` (the content of ``source``) declares; :class:`TopologyError` names any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{source}: not valid TOML: {exc}") from None
    top = _Table(source, "", data)
    kong, deployment, services = top.table("kong"), top.table("deployment"), top.table("services")
    claims, metrics, routes_table = top.table("claims"), top.table("metrics"), top.table("routes")
    kong_service = kong.text("service_name")
    routes = {name: _route(source, name, routes_table.table(name), kong_service) for name in list(routes_table.data)}
    if not routes:
        raise TopologyError(f"{source}: [routes] declares no route")
    names = deployment.table("names")
    deployment_names = {stack: names.text(stack) for stack in list(names.data)}
    claim_routes = {claim: claims.text(claim) for claim in CLAIMS}
    named = {f"claims.{claim}": route for claim, route in claim_routes.items()}
    named["canary_route"] = top.text("canary_route")
    for key, route in named.items():
        if route not in routes:
            raise TopologyError(f"{source}: {key} = {route!r} names no route (have {sorted(routes)})")
    demo, gateway = services.texts("demo"), services.texts("gateway")
    if not set(gateway) <= set(demo):
        raise TopologyError(f"{source}: services.gateway {sorted(set(gateway) - set(demo))} not in services.demo")
    signals_table = services.table("signals")
    service_signals = {stack: _signals(source, signals_table.table(stack), demo) for stack in list(signals_table.data)}
    topology = Topology(
        source=source, token_env=top.text("token_env"), canary=routes[named["canary_route"]],
        kong_service_name=kong_service, deployment_attribute=deployment.text("attribute"),
        deployment_env=deployment.text("env"), deployment_names=deployment_names, demo_services=demo,
        gateway_services=gateway, routes=routes, claim_routes=claim_routes,
        request_counter=metrics.text("request_counter"), latency_histogram=metrics.text("latency_histogram"),
        route_label=metrics.text("route_label"), bandwidth_counter=metrics.text("bandwidth_counter"),
        service_request_histogram=metrics.text("service_request_histogram"), service_signals=service_signals)
    for table in (top, kong, deployment, names, services, signals_table, claims, metrics, routes_table):
        table.done()
    return topology


def load(path: str | Path) -> Topology:
    """The topology declared in the file ``path``."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(f"{source}: cannot read the topology file: {exc.strerror or exc}") from None
    return parse(text, source)


@cache
def _cached(source: Path, mtime_ns: int) -> Topology:
    return load(source)


def current(manifests: str | Path | None = None) -> Topology:
    """The topology of the manifests folder in force (``manifests``, else :func:`otelgate.paths.manifests_dir`)."""
    source = paths.manifests_dir(manifests) / paths.TOPOLOGY_FILE
    try:
        mtime_ns = source.stat().st_mtime_ns
    except OSError:
        raise TopologyError(f"{source}: no topology file in the manifests folder (otelgate.toml declares the "
                            "routes, services and names the suites use)") from None
    return _cached(source, mtime_ns)
