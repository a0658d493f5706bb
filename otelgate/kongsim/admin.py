"""The Kong simulator's Status API and Admin API (the simulator is a TEST DOUBLE of Kong 3.9, not Kong).

Status API (docs/reference/kong-3.9.md#status-api): ``GET /status``, ``GET /status/ready``, ``GET /metrics``.
Admin API: ``GET /status``, ``GET /metrics``, ``POST /config`` (DB-less reload: the body is a declarative config
as JSON or YAML, raw or in a ``config`` form field; it is validated completely before it replaces the running one).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from otelgate import kongconfig
from otelgate.kongsim.node import Node
from otelgate.kongsim.tracing import KONG_VERSION

log = logging.getLogger("otelgate.kongsim.admin")
SIMULATOR_NOTE = "otelgate Kong simulator: a test double of Kong 3.9, not Kong"


def status_payload(node: Node) -> dict[str, Any]:
    stats = node.stats()
    runtime = node.runtime
    return {
        "database": {"reachable": True},
        "server": {
            "connections_accepted": stats.connections_accepted, "connections_active": stats.connections_active,
            "connections_handled": stats.connections_accepted, "connections_reading": 0,
            "connections_waiting": 0, "connections_writing": stats.connections_active,
            "total_requests": stats.total_requests,
        },
        "configuration_hash": runtime.config.config_hash if runtime else "0" * 32,
        "memory": {"lua_shared_dicts": {}, "workers_lua_vms": []},
        "otelgate_test_double": SIMULATOR_NOTE,
        "otelgate_telemetry_lost": node.losses(),  # not a Kong field: what the simulator dropped (Kong only logs it)
    }


def _metrics_endpoint(node: Node) -> Route:
    async def metrics(_request: Request) -> Response:
        return Response(node.metrics_text(), media_type="text/plain; charset=UTF-8")
    return Route("/metrics", metrics, methods=["GET"])


def _status_endpoint(node: Node) -> Route:
    async def status(_request: Request) -> Response:
        return JSONResponse(status_payload(node))
    return Route("/status", status, methods=["GET"])


def status_app(node: Node) -> Starlette:
    async def ready(_request: Request) -> Response:
        if node.runtime is None:
            return JSONResponse({"message": "no configuration available (empty configuration present)"},
                                status_code=503)
        return JSONResponse({"message": "ready"})

    return Starlette(routes=[_status_endpoint(node), Route("/status/ready", ready, methods=["GET"]),
                             _metrics_endpoint(node)])


async def _config_body(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        value = form.get("config")
        if value is None:
            return b""
        return value.encode() if isinstance(value, str) else await value.read()
    body = await request.body()
    if content_type.startswith("application/json"):
        parsed = json.loads(body or b"null")
        if isinstance(parsed, dict) and isinstance(parsed.get("config"), str):  # {"config": "<yaml text>"}
            return parsed["config"].encode()
    return body


def admin_app(node: Node) -> Starlette:
    async def root(_request: Request) -> Response:
        return JSONResponse({"version": KONG_VERSION, "tagline": SIMULATOR_NOTE, "node_id": node.node_id,
                             "configuration": {"database": "off", "role": "traditional"}})

    async def post_config(request: Request) -> Response:
        try:
            body = await _config_body(request)
            doc = kongconfig.loads(body, "POST /config")
            await node.load(doc, "POST /config")
        except (kongconfig.KongConfigError, ValueError) as exc:
            log.error("POST /config rejected: %s", exc)
            problems = getattr(exc, "problems", [str(exc)])
            return JSONResponse({"code": 14, "name": "invalid declarative configuration",
                                 "message": f"declarative config is invalid: {exc}", "fields": problems},
                                status_code=400)
        runtime = node.runtime
        assert runtime is not None
        return JSONResponse({"configuration_hash": runtime.config.config_hash,
                             "services": [s.entity for s in runtime.config.services],
                             "routes": [dict(r.entity) for s in runtime.config.services for r in s.routes],
                             "plugins": [{"id": p.id, "name": p.name, "enabled": p.enabled}
                                         for p in runtime.config.plugins]}, status_code=201)

    async def get_config(_request: Request) -> Response:
        runtime = node.runtime
        return JSONResponse({"config": json.dumps(runtime.doc) if runtime else None})

    return Starlette(routes=[Route("/", root, methods=["GET"]), _status_endpoint(node), _metrics_endpoint(node),
                             Route("/config", post_config, methods=["POST"]),
                             Route("/config", get_config, methods=["GET"])])
