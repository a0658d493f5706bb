"""Kong's declarative configuration (decK ``_format_version: "3.0"``): load, validate, derive, diff.

``manifests/kong/kong.yaml`` is the cluster's file: real Kong loads it on kind, the Kong simulator (a test double,
``otelgate.kongsim``) loads it on the local stack. Validation is deliberately strict and loud: any entity, plugin or
field the simulator does not implement raises :class:`KongConfigError` naming it, so the local stack can never pass
on a setting it silently ignored. A field Kong knows but the simulator does not implement is accepted only when it
holds Kong's default value (then the behaviour is the same).

Derived configurations (other stacks) change only the keys in :data:`KONG_REWRITES` plus the plugin overrides a stack
asks for explicitly; :func:`config_diff` lets tests prove it.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from otelgate import paths
from otelgate.kongschema import (
    PLUGIN_ENTITY_SPEC,
    PLUGIN_SPECS,
    PROPAGATION_SPEC,
    QUEUE_SPEC,
    ROUTE_SPEC,
    SERVICE_SPEC,
    TOP_LEVEL_KEYS,
    check_record,
    check_url,
)

DEFAULT_PATH = paths.manifest("kong/kong.yaml")

# The keys derive_kong_config may change (besides explicit plugin overrides). Patterns match config_diff paths.
KONG_REWRITES: tuple[str, ...] = (
    "services[*].url",
    "services[*].protocol",
    "services[*].host",
    "services[*].port",
    "services[*].path",
    "plugins[opentelemetry].config.traces_endpoint",
    "plugins[tcp-log].config.host",
    "plugins[tcp-log].config.port",
)

SUPPORTED_PLUGINS = ("opentelemetry", "prometheus", "tcp-log")
# Stable ids for entities without an `id` (Kong DB-less also derives ids; these are NOT Kong's values).
_ID_NAMESPACE = uuid.UUID("5b0f3f8e-2f9c-4c55-9a9e-6b7c1f3d0a11")
DEFAULT_WORKSPACE_ID = str(uuid.uuid5(_ID_NAMESPACE, "workspaces:default"))


class KongConfigError(ValueError):
    """The declarative config is invalid, or uses something the Kong simulator does not implement."""

    def __init__(self, problems: list[str], source: str = "kong.yaml") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the Kong declarative config:\n{lines}")


# ---------------------------------------------------------------------------------------------------------------
# the typed model the simulator runs on

@dataclass(frozen=True)
class Route:
    id: str
    name: str | None
    paths: tuple[str, ...]
    strip_path: bool
    preserve_host: bool
    protocols: tuple[str, ...]
    entity: Mapping[str, Any]  # the full entity with defaults (what kong.log.serialize() shows as `route`)


@dataclass(frozen=True)
class Service:
    id: str
    name: str | None
    protocol: str
    host: str
    port: int
    path: str | None
    retries: int
    connect_timeout_ms: int
    write_timeout_ms: int
    read_timeout_ms: int
    routes: tuple[Route, ...]
    entity: Mapping[str, Any]


@dataclass(frozen=True)
class Plugin:
    id: str
    name: str
    enabled: bool
    config: Mapping[str, Any]  # with Kong's defaults applied


@dataclass(frozen=True)
class KongConfig:
    services: tuple[Service, ...]
    plugins: tuple[Plugin, ...]
    config_hash: str

    def plugin(self, name: str) -> Plugin | None:
        return next((p for p in self.plugins if p.name == name and p.enabled), None)


def _service_location(svc: dict[str, Any], where: str, problems: list[str]) -> tuple[str, str, int, str | None]:
    if svc.get("url"):
        parts = urlsplit(svc["url"])
        protocol = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if protocol == "https" else 80)
        path = parts.path or None
        for key in ("protocol", "host", "port", "path"):
            if svc.get(key) is not None and key != "protocol":
                problems.append(f"{where}: `url` and `{key}` are mutually exclusive")
        return protocol, host, port, path
    if not svc.get("host"):
        problems.append(f"{where}: needs `url` or `host`")
    protocol = svc.get("protocol") or "http"
    return protocol, svc.get("host") or "", svc.get("port") or (443 if protocol == "https" else 80), svc.get("path")


def _timestamps() -> dict[str, int]:
    """``created_at``/``updated_at`` (``typedefs.auto_timestamp_s``: whole seconds, set when the config is loaded;
    routes.lua:150-151, services.lua:30-31)."""
    now = int(time.time())
    return {"created_at": now, "updated_at": now}


def _entity_id(explicit: Any, kind: str, key: str) -> str:
    return str(explicit) if explicit else str(uuid.uuid5(_ID_NAMESPACE, f"{kind}:{key}"))


def _parse_routes(svc: dict[str, Any], svc_id: str, where: str, problems: list[str]) -> tuple[Route, ...]:
    routes = []
    for r_index, raw_route in enumerate(svc.get("routes") or []):
        r_where = f"{where}.routes[{r_index}]"
        route = check_record(raw_route, ROUTE_SPEC, r_where, problems)
        if not route:
            continue
        route_id = _entity_id(route.get("id"), "routes", route.get("name") or f"{svc_id}:{r_index}")
        entity = {k: v for k, v in route.items() if v is not None}
        entity.update(id=route_id, service={"id": svc_id}, ws_id=DEFAULT_WORKSPACE_ID, **_timestamps())
        routes.append(Route(id=route_id, name=route.get("name"), paths=tuple(route.get("paths") or ()),
                            strip_path=bool(route["strip_path"]), preserve_host=bool(route["preserve_host"]),
                            protocols=tuple(route["protocols"]), entity=entity))
    return tuple(routes)


def _parse_services(doc: dict[str, Any], problems: list[str]) -> tuple[Service, ...]:
    services = []
    raw_services = doc.get("services") or []
    if not isinstance(raw_services, list):
        problems.append(f"services: expected a list, got {raw_services!r}")
        return ()
    for index, raw in enumerate(raw_services):
        where = f"services[{index}]"
        svc = check_record(raw, SERVICE_SPEC, where, problems)
        if not svc:
            continue
        protocol, host, port, path = _service_location(svc, where, problems)
        if protocol != "http":
            problems.append(f"{where}: protocol {protocol!r} is not simulated by the Kong simulator (it proxies "
                            "plain HTTP/1.1 to plain HTTP upstreams: no TLS, gRPC, TCP or WebSocket)")
        svc_id = _entity_id(svc.get("id"), "services", svc.get("name") or f"#{index}")
        entity = {k: v for k, v in svc.items() if v is not None and k not in ("routes", "url", "plugins")}
        entity.update(id=svc_id, protocol=protocol, host=host, port=port, ws_id=DEFAULT_WORKSPACE_ID,
                      **_timestamps())
        if path:
            entity["path"] = path
        services.append(Service(
            id=svc_id, name=svc.get("name"), protocol=protocol, host=host, port=port, path=path,
            retries=svc["retries"], connect_timeout_ms=svc["connect_timeout"], write_timeout_ms=svc["write_timeout"],
            read_timeout_ms=svc["read_timeout"], routes=_parse_routes(svc, svc_id, where, problems), entity=entity))
    return tuple(services)


def _parse_otel(config: dict[str, Any], where: str, problems: list[str]) -> None:
    if config.get("endpoint") and not config.get("traces_endpoint"):
        config["traces_endpoint"] = config["endpoint"]  # 3.8+: deprecated alias
    if not config.get("traces_endpoint"):
        problems.append(f"{where}.traces_endpoint: required (Kong needs traces_endpoint or logs_endpoint; the "
                        "simulator implements traces only)")
    queue = config.get("queue") or {}
    # deprecated fields win when they differ from their old defaults
    # (Kong/kong@3.9.1 kong/tools/queue.lua:487-502, docs/reference/kong-3.9.md#queue-defaults)
    if config.get("batch_span_count") not in (None, 200):
        queue = {**queue, "max_batch_size": config["batch_span_count"]}
    if config.get("batch_flush_delay") not in (None, 3):
        queue = {**queue, "max_coalescing_delay": config["batch_flush_delay"]}
    config["queue"] = check_record(queue, QUEUE_SPEC, f"{where}.queue", problems)
    config["propagation"] = check_record(config.get("propagation") or {}, PROPAGATION_SPEC,
                                          f"{where}.propagation", problems)


def _parse_plugins(doc: dict[str, Any], problems: list[str]) -> tuple[Plugin, ...]:
    plugins = []
    raw_plugins = doc.get("plugins") or []
    if not isinstance(raw_plugins, list):
        problems.append(f"plugins: expected a list, got {raw_plugins!r}")
        return ()
    seen: set[str] = set()
    for index, raw in enumerate(raw_plugins):
        where = f"plugins[{index}]"
        entity = check_record(raw, PLUGIN_ENTITY_SPEC, where, problems)
        name = entity.get("name")
        if not name:
            continue
        where = f"plugins[{name}]"
        if name not in PLUGIN_SPECS:
            problems.append(f"{where}: plugin {name!r} is not implemented by the Kong simulator "
                            f"(it implements {list(SUPPORTED_PLUGINS)})")
            continue
        if name in seen:
            problems.append(f"{where}: a global plugin may be configured only once")
        seen.add(name)
        protocols = entity.get("protocols")
        if protocols is not None and "http" not in protocols:
            problems.append(f"{where}.protocols: the simulator proxies http only; {protocols} excludes it")
        config = check_record(entity.get("config") or {}, PLUGIN_SPECS[name], f"{where}.config", problems)
        if name == "opentelemetry":
            _parse_otel(config, f"{where}.config", problems)
        plugins.append(Plugin(id=_entity_id(entity.get("id"), "plugins", name), name=name,
                              enabled=bool(entity["enabled"]), config=config))
    return tuple(plugins)


def config_hash(doc: Mapping[str, Any]) -> str:
    """md5 of the canonical JSON, like Kong's 32-hex configuration hash (not Kong's value)."""
    return hashlib.md5(json.dumps(doc, sort_keys=True).encode(), usedforsecurity=False).hexdigest()


def parse(doc: Any, source: str = "kong.yaml") -> KongConfig:
    """Validate ``doc`` and build the simulator's model. Raises :class:`KongConfigError` listing every problem."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise KongConfigError([f"top level: expected a map, got {type(doc).__name__}"], source)
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            problems.append(f"{key}: top-level entity not implemented by the Kong simulator "
                            f"(it implements {sorted(TOP_LEVEL_KEYS)})")
    if doc.get("_format_version") != "3.0":
        problems.append(f"_format_version: expected \"3.0\", got {doc.get('_format_version')!r}")
    if doc.get("_transform", True) is not True:
        problems.append("_transform: only the default (true) is implemented by the Kong simulator")
    services = _parse_services(doc, problems)
    plugins = _parse_plugins(doc, problems)
    _check_unique(services, problems)
    if problems:
        raise KongConfigError(problems, source)
    return KongConfig(services=services, plugins=plugins, config_hash=config_hash(doc))


def _check_unique(services: tuple[Service, ...], problems: list[str]) -> None:
    names = [s.name for s in services if s.name]
    route_names = [r.name for s in services for r in s.routes if r.name]
    for label, values in (("service", names), ("route", route_names)):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            problems.append(f"duplicate {label} names: {dupes}")


def tcp_log_snippets(doc: Mapping[str, Any]) -> dict[str, str]:
    """``custom_fields_by_lua`` of the document's tcp-log plugins, as ``{key: code}`` (empty when none)."""
    out: dict[str, str] = {}
    for plugin in doc.get("plugins") or []:
        if isinstance(plugin, dict) and plugin.get("name") == "tcp-log":
            fields = (plugin.get("config") or {}).get("custom_fields_by_lua") or {}
            out.update({str(k): str(v) for k, v in fields.items()})
    return out


def validate(doc: Any, source: str = "kong.yaml") -> None:
    parse(doc, source)


def load(path: str | Path = DEFAULT_PATH) -> dict[str, Any]:
    """Read and validate a decK file; return the document (a plain dict, unchanged)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise KongConfigError([f"not valid YAML: {exc}"], str(path)) from exc
    validate(doc, str(path))
    return doc  # type: ignore[no-any-return]


def loads(text: str | bytes, source: str = "request body") -> dict[str, Any]:
    """Parse a declarative config given as JSON or YAML text and validate it."""
    try:
        doc = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise KongConfigError([f"not valid JSON/YAML: {exc}"], source) from exc
    validate(doc, source)
    return doc  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------------------
# derivation and diff

def _plugin_entry(doc: dict[str, Any], name: str) -> dict[str, Any]:
    for plugin in doc.get("plugins") or []:
        if plugin.get("name") == name:
            plugin.setdefault("config", {})
            return plugin  # type: ignore[no-any-return]
    raise KongConfigError([f"plugin {name!r} is not configured in the document; cannot rewrite it"])


def _set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set (or delete when ``value`` is None) ``a.b.c`` in ``config``. Keys themselves never contain dots here,
    except the known map fields whose keys do (resource_attributes, headers, custom_fields_by_lua): for those the
    rest of the path after the map field is one key."""
    parts = dotted.split(".")
    node = config
    map_fields = {"resource_attributes", "headers", "custom_fields_by_lua"}
    for index, part in enumerate(parts[:-1]):
        if part in map_fields:
            parts = [*parts[: index + 1], ".".join(parts[index + 1:])]
            break
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise KongConfigError([f"override {dotted!r}: {part!r} is not a map"])
        node = child
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def derive_kong_config(
    doc: Mapping[str, Any],
    *,
    upstreams: Mapping[str, str],
    otlp_traces_endpoint: str,
    tcp_log_host: str,
    tcp_log_port: int,
    plugin_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A copy of ``doc`` for another stack: upstream URLs per service name, the traces endpoint and the tcp-log
    target rewritten (:data:`KONG_REWRITES`), then ``plugin_overrides`` ``{plugin: {dotted.key: value | None}}``
    applied (None deletes). Services not named in ``upstreams`` keep their URL. The result is validated."""
    out = copy.deepcopy(dict(doc))
    names = {s.get("name") for s in out.get("services") or []}
    unknown = sorted(set(upstreams) - names)
    if unknown:
        raise KongConfigError([f"upstreams for unknown service(s) {unknown}; the document has {sorted(names)}"])
    for service in out.get("services") or []:
        url = upstreams.get(service.get("name"))
        if url is None:
            continue
        if err := check_url(url):
            raise KongConfigError([f"upstream for {service.get('name')!r}: {err}"])
        for key in ("protocol", "host", "port", "path"):
            service.pop(key, None)
        service["url"] = url
    _plugin_entry(out, "opentelemetry")["config"]["traces_endpoint"] = otlp_traces_endpoint
    tcp = _plugin_entry(out, "tcp-log")["config"]
    tcp["host"], tcp["port"] = tcp_log_host, int(tcp_log_port)
    for plugin_name, overrides in (plugin_overrides or {}).items():
        config = _plugin_entry(out, plugin_name)["config"]
        for dotted, value in overrides.items():
            _set_dotted(config, dotted, value)
    validate(out, "derived Kong config")
    return out


def config_diff(before: Any, after: Any) -> list[str]:
    """Paths whose values differ between two configs, e.g. ``services[coupon].url``,
    ``plugins[opentelemetry].config.traces_endpoint``. Named list items are matched by name
    (:func:`otelgate.configdiff.changes`)."""
    from otelgate.configdiff import changes

    return [change.dotted for change in changes(before, after)]


def is_rewrite(path: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> bool:
    """True if ``path`` (from :func:`config_diff`) is one of :data:`KONG_REWRITES` or lies on an explicit override
    (the key itself, below it, or a map the override had to create)."""
    escaped = [p.replace("[", "[[]") for p in KONG_REWRITES]  # "[" is literal in our paths, "*" stays a wildcard
    if any(fnmatch.fnmatchcase(path, p) for p in escaped):
        return True
    for plugin_name, keys in (overrides or {}).items():
        for key in keys:
            target = f"plugins[{plugin_name}].config.{key}"
            if path == target or path.startswith(target + ".") or target.startswith(path + "."):
                return True
    return False
