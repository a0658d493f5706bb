"""The schema side of ``otelgate.kongconfig``: Kong 3.9's declarative-config fields as the Kong simulator (a test
double) implements them, each with its check and Kong's default. A field Kong has but the simulator does not model
is accepted only at Kong's default, or refused with a message naming it (docs/kong-simulator.md#refused-at-load)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

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


def check_url(v: Any) -> str | None:
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
    "traces_endpoint": (check_url, None),  # required here: logs_endpoint is not implemented (checked in _parse_otel)
    "endpoint": (check_url, None),  # deprecated alias of traces_endpoint (3.8+)
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
    "url": (check_url, None),
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


def check_record(record: Any, spec: Spec, where: str, problems: list[str]) -> dict[str, Any]:
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
