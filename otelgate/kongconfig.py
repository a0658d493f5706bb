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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from otelgate import paths

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
# field specs: name -> (check, default). A check returns an error string or None.

Check = Callable[[Any], str | None]
_MISSING = object()


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"expected a boolean, got {v!r}"


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) and v else f"expected a non-empty string, got {v!r}"


def _number(lo: float, hi: float) -> Check:
    def check(v: Any) -> str | None:
        if not _is_number(v) or not lo <= v <= hi:
            return f"expected a number between {lo:g} and {hi:g}, got {v!r}"
        return None
    return check


def _int(lo: int, hi: int) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            return f"expected an integer between {lo} and {hi}, got {v!r}"
        return None
    return check


def _url(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"expected a URL string, got {v!r}"
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http(s) URL with a host, got {v!r}"
    return None


def _one_of(*allowed: Any) -> Check:
    def check(v: Any) -> str | None:
        return None if v in allowed else f"expected one of {list(allowed)}, got {v!r}"
    return check


def _string_list(element: Check | None = None) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return f"expected a list of strings, got {v!r}"
        for x in v:
            if element and (err := element(x)):
                return err
        return None
    return check


def _string_map(v: Any) -> str | None:
    if not isinstance(v, dict) or not all(isinstance(k, str) and k for k in v):
        return f"expected a map with string keys, got {v!r}"
    bad = [k for k, x in v.items() if not isinstance(x, str) or not x]
    return f"values must be non-empty strings; bad keys: {bad}" if bad else None


def _only_default(default: Any) -> Check:
    """A field Kong has but the simulator does not implement: only Kong's default value is accepted."""
    def check(v: Any) -> str | None:
        if v == default:
            return None
        return f"not implemented by the Kong simulator (only Kong's default {default!r} is accepted), got {v!r}"
    return check


def _unsupported(v: Any) -> str | None:
    return None if v is None else f"not implemented by the Kong simulator, got {v!r}"


Spec = dict[str, tuple[Check, Any]]

QUEUE_SPEC: Spec = {
    # the opentelemetry plugin's default (docs/reference/kong-3.9.md#queue-defaults); queue_schema says 1
    "max_batch_size": (_int(1, 1_000_000), 200),
    "max_coalescing_delay": (_number(0, 3600), 1),
    "max_entries": (_int(1, 1_000_000), 10_000),
    "max_bytes": (_unsupported, None),
    "max_retry_time": (_number(0, 1e9), 60),
    "initial_retry_delay": (_number(0.001, 1_000_000), 0.01),
    "max_retry_delay": (_number(0.001, 1_000_000), 60),
    "concurrency_limit": (_only_default(1), 1),
}

EXTRACTORS_IMPLEMENTED = ("w3c", "b3")
INJECTORS_IMPLEMENTED = ("preserve", "w3c", "b3", "b3-single")
_KONG_FORMATS = ("w3c", "b3", "b3-single", "jaeger", "ot", "datadog", "aws", "gcp")


def _extract_list(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        return f"expected a list of formats, got {v!r}"
    unknown = [x for x in v if x not in _KONG_FORMATS or x == "b3-single"]
    if unknown:
        return f"unknown extractor(s) {unknown}"
    missing = [x for x in v if x not in EXTRACTORS_IMPLEMENTED]
    return f"extractor(s) {missing} not implemented by the Kong simulator (it has {list(EXTRACTORS_IMPLEMENTED)})" \
        if missing else None


def _inject_list(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        return f"expected a list of formats, got {v!r}"
    unknown = [x for x in v if x != "preserve" and x not in _KONG_FORMATS]
    if unknown:
        return f"unknown injector(s) {unknown}"
    missing = [x for x in v if x not in INJECTORS_IMPLEMENTED]
    return f"injector(s) {missing} not implemented by the Kong simulator (it has {list(INJECTORS_IMPLEMENTED)})" \
        if missing else None


def _format(implemented: tuple[str, ...], extra: tuple[str, ...] = ()) -> Check:
    """A propagation format: Kong's formats the simulator lacks are refused as not simulated (not as invalid)."""
    def check(v: Any) -> str | None:
        if v in implemented:
            return None
        if v in _KONG_FORMATS or v in extra:
            return (f"{v!r} propagation is not simulated by the Kong simulator (it implements "
                    f"{list(implemented)}); run this config on the docker or kind stack")
        return f"expected one of {[*implemented, *extra]}, got {v!r}"
    return check


def _clear_list(v: Any) -> str | None:
    return None if v is None else _string_list()(v)


PROPAGATION_SPEC: Spec = {
    "extract": (_extract_list, None),
    "clear": (_clear_list, None),
    "inject": (_inject_list, None),
    "default_format": (_format(("w3c", "b3", "b3-single")), "w3c"),
}

OTEL_SPEC: Spec = {
    "traces_endpoint": (_url, None),  # required here: logs_endpoint is not implemented (checked in _parse_otel)
    "endpoint": (_url, None),  # deprecated alias of traces_endpoint (3.8+)
    "logs_endpoint": (_unsupported, None),
    "headers": (_string_map, None),
    "resource_attributes": (_string_map, None),
    "queue": (lambda v: None, None),  # checked as a record below
    "batch_span_count": (_int(1, 1_000_000), None),
    "batch_flush_delay": (_number(0, 3600), None),
    "connect_timeout": (_int(0, 2**31 - 2), 1000),
    "send_timeout": (_int(0, 2**31 - 2), 5000),
    "read_timeout": (_int(0, 2**31 - 2), 5000),
    "http_response_header_for_traceid": (_string, None),
    "header_type": (_format(("preserve", "ignore", "w3c", "b3", "b3-single")), "preserve"),
    "sampling_rate": (_number(0, 1), None),
    "propagation": (lambda v: None, None),  # checked as a record below
}

PROMETHEUS_SPEC: Spec = {
    "per_consumer": (_bool, False),
    "status_code_metrics": (_bool, False),
    "latency_metrics": (_bool, False),
    "bandwidth_metrics": (_bool, False),
    "upstream_health_metrics": (_bool, False),
    "ai_metrics": (_only_default(False), False),
}

TCP_LOG_SPEC: Spec = {
    "host": (_string, _MISSING),
    "port": (_int(0, 65535), _MISSING),
    "timeout": (_number(0, 2**31), 10000),
    "keepalive": (_number(0, 2**31), 60000),
    "tls": (_only_default(False), False),
    "tls_sni": (_unsupported, None),
    "custom_fields_by_lua": (_string_map, None),
}

PLUGIN_SPECS: dict[str, Spec] = {"opentelemetry": OTEL_SPEC, "prometheus": PROMETHEUS_SPEC, "tcp-log": TCP_LOG_SPEC}

SERVICE_SPEC: Spec = {
    "id": (_string, None),
    "name": (_string, None),
    "url": (_url, None),
    "protocol": (_one_of("http"), "http"),  # TLS, gRPC, TCP upstreams are not simulated
    "host": (_string, None),
    "port": (_int(0, 65535), None),
    "path": (_string, None),
    "retries": (_int(0, 32767), 5),
    "connect_timeout": (_int(1, 2**31 - 2), 60000),
    "write_timeout": (_int(1, 2**31 - 2), 60000),
    "read_timeout": (_int(1, 2**31 - 2), 60000),
    "tags": (_string_list(), None),
    "enabled": (_only_default(True), True),
    "client_certificate": (_unsupported, None),
    "tls_verify": (_unsupported, None),
    "tls_verify_depth": (_unsupported, None),
    "ca_certificates": (_unsupported, None),
    "routes": (lambda v: None if isinstance(v, list) else f"expected a list, got {v!r}", None),
    "plugins": (lambda v: None if not v else "service-scoped plugins are not implemented by the Kong simulator "
                "(use global plugins)", None),
}


def _route_protocols(v: Any) -> str | None:
    if err := _string_list(_one_of("http", "https"))(v):
        return err
    if "http" not in v:
        return (f"{v} excludes http: the Kong simulator's proxy listens on plain HTTP only (no TLS), so this route "
                "could never match there")
    return None


def _paths(v: Any) -> str | None:
    if err := _string_list()(v):
        return err
    for p in v:
        if p.startswith("~"):
            return f"regex path {p!r} is not implemented by the Kong simulator (prefix paths only)"
        if not p.startswith("/"):
            return f"path {p!r} must start with '/'"
    return None


# Kong 3.9.1 routes schema (kong/db/schema/entities/routes.lua:148-203) under the default router_flavor
# traditional_compatible (kong/templates/kong_defaults.lua:189): `expression` and `priority` exist only with the
# expressions flavor (routes.lua:209-219), so they are unknown fields here, as in Kong.
ROUTE_SPEC: Spec = {
    "id": (_string, None),
    "name": (_string, None),
    "paths": (_paths, _MISSING),
    "strip_path": (_bool, True),
    "preserve_host": (_bool, False),
    "protocols": (_route_protocols, ["http", "https"]),
    "tags": (_string_list(), None),
    "methods": (_unsupported, None),
    "hosts": (_unsupported, None),
    "headers": (_unsupported, None),
    "snis": (_unsupported, None),
    "sources": (_unsupported, None),
    "destinations": (_unsupported, None),
    "https_redirect_status_code": (_only_default(426), 426),
    "regex_priority": (_only_default(0), 0),
    "path_handling": (_only_default("v0"), "v0"),
    "request_buffering": (_only_default(True), True),
    "response_buffering": (_only_default(True), True),
    "plugins": (lambda v: None if not v else "route-scoped plugins are not implemented by the Kong simulator", None),
}

PLUGIN_ENTITY_SPEC: Spec = {
    "name": (_string, _MISSING),
    "config": (lambda v: None if isinstance(v, dict) else f"expected a map, got {v!r}", None),
    "enabled": (_bool, True),
    "id": (_string, None),
    "instance_name": (_string, None),
    "tags": (_string_list(), None),
    "protocols": (_string_list(_one_of("grpc", "grpcs", "http", "https", "tcp", "tls", "udp", "tls_passthrough",
                                       "ws", "wss")), None),
    "service": (_unsupported, None),
    "route": (_unsupported, None),
    "consumer": (_unsupported, None),
    "ordering": (_unsupported, None),
}

TOP_LEVEL_KEYS = {"_format_version", "_transform", "_comment", "_info", "services", "plugins"}


def _check_record(record: Any, spec: Spec, where: str, problems: list[str]) -> dict[str, Any]:
    """Check ``record`` against ``spec``; return it with Kong's defaults filled in."""
    if not isinstance(record, dict):
        problems.append(f"{where}: expected a map, got {record!r}")
        return {}
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key not in spec:
            problems.append(f"{where}.{key}: unknown field (not in Kong 3.9's schema as implemented by the Kong "
                            f"simulator; known: {sorted(spec)})")
            continue
        check, _default = spec[key]
        if value is not None and (err := check(value)):
            problems.append(f"{where}.{key}: {err}")
        out[key] = value
    for key, (_check, default) in spec.items():
        if out.get(key) is None:
            if default is _MISSING:
                problems.append(f"{where}.{key}: required field missing")
            else:
                out[key] = copy.deepcopy(default)
    return out


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
        route = _check_record(raw_route, ROUTE_SPEC, r_where, problems)
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
        svc = _check_record(raw, SERVICE_SPEC, where, problems)
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
    config["queue"] = _check_record(queue, QUEUE_SPEC, f"{where}.queue", problems)
    config["propagation"] = _check_record(config.get("propagation") or {}, PROPAGATION_SPEC,
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
        entity = _check_record(raw, PLUGIN_ENTITY_SPEC, where, problems)
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
        config = _check_record(entity.get("config") or {}, PLUGIN_SPECS[name], f"{where}.config", problems)
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
        if err := _url(url):
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
