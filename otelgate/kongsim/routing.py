"""Routing of the Kong simulator (a TEST DOUBLE of Kong 3.9, not Kong): prefix paths, longest first, and
``path_handling = v0`` (docs/reference/kong-3.9.md#declarative-configuration)."""

from __future__ import annotations

from otelgate import kongconfig


def match_route(config: kongconfig.KongConfig, path: str
                ) -> tuple[kongconfig.Service, kongconfig.Route, str] | None:
    """Prefix routing: the longest matching prefix path wins (Kong sorts prefix paths by length)."""
    best: tuple[int, kongconfig.Service, kongconfig.Route, str] | None = None
    for service in config.services:
        for route in service.routes:
            for prefix in route.paths:
                if path.startswith(prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), service, route, prefix)
    if best is None:
        return None
    _length, service, route, prefix = best
    return service, route, upstream_path(service, route, prefix, path)


def matched_prefix(route: kongconfig.Route, path: str) -> str | None:
    return max((p for p in route.paths if path.startswith(p)), key=len, default=None)


def upstream_path(service: kongconfig.Service, route: kongconfig.Route, prefix: str, path: str) -> str:
    """``path_handling = v0``: strip the matched prefix when ``strip_path``, then append to the service path."""
    rest = path[len(prefix):] if route.strip_path else path
    base = service.path
    if not base:
        return rest if rest.startswith("/") else "/" + rest
    if not rest or rest == "/":
        return base if route.strip_path else base.rstrip("/") + rest
    if base.endswith("/") and rest.startswith("/"):
        return base + rest[1:]
    return base + rest if rest.startswith("/") or base.endswith("/") else base + "/" + rest
