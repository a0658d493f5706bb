"""The four demo services as Flask apps. No OpenTelemetry imports: instrumentation is injected from outside.

API (as the cluster's demo images, odigos-io/simple-demo: e.g. coupon/app.js@20a6d0b:40-99 for coupon):
- coupon: ``GET /coupons`` and ``POST /apply-coupon``, both call membership ``GET /isMember``.
  Unlike the upstream Node image (whose request hangs when membership fails), coupon calls membership with a
  client timeout and answers 502 with a JSON error, so a broken hop shows up as an error, never as a hang.
- membership: ``GET /isMember?userId=``.
- inventory: ``GET /inventory``, ``POST /buy?id=`` (sleeps as upstream: ``INVENTORY_BUY_DELAY_S``).
- pricing: ``GET /price?id=``.
Every service also answers ``GET /healthz`` (the stack's readiness probe).
"""

from __future__ import annotations

import os
import random
import time
import zlib
from collections.abc import Callable
from typing import Any

import requests
from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue

SERVICES = ("coupon", "membership", "inventory", "pricing")

# connect and read timeouts of coupon's call to membership (seconds); overridable for tests of slow members
DEFAULT_MEMBERSHIP_TIMEOUT = (1.0, 3.0)

PRODUCTS = [
    {"id": 0, "name": "Pen", "stock": 120},
    {"id": 1, "name": "Notebook", "stock": 40},
    {"id": 2, "name": "Backpack", "stock": 7},
    {"id": 3, "name": "Water bottle", "stock": 0},
]
PRICES = {0: 1.99, 1: 4.5, 2: 39.0, 3: 12.25}


def membership_base_url(value: str | None) -> str:
    """``MEMBERSHIP_SERVICE_HOST`` as the demo image accepts it: ``host:port`` or a full URL."""
    if not value or not value.strip():
        raise ValueError("MEMBERSHIP_SERVICE_HOST is not set (host:port or http://host:port)")
    value = value.strip().rstrip("/")
    return value if "://" in value else f"http://{value}"


def _timeout_from_env() -> tuple[float, float]:
    raw = os.environ.get("MEMBERSHIP_TIMEOUT_S")
    if not raw:
        return DEFAULT_MEMBERSHIP_TIMEOUT
    seconds = float(raw)
    return (min(seconds, DEFAULT_MEMBERSHIP_TIMEOUT[0]), seconds)


def _health(app: Flask, service: str) -> None:
    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok", service=service)


def _log_each_request(app: Flask) -> None:
    """One log line per request, written while the request's span is current, so the instrumentation's log record
    carries the request's trace id (the server's own access line is written after the span ended)."""
    @app.after_request
    def log_request(response: Response) -> Response:
        app.logger.info("%s %s -> %d", request.method, request.path, response.status_code)
        return response


def _coupon(app: Flask) -> None:
    base_url = membership_base_url(os.environ.get("MEMBERSHIP_SERVICE_HOST"))
    timeout = _timeout_from_env()
    session = requests.Session()

    def ask_membership(user_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """Membership's answer, or an error text; never raises and never waits longer than ``timeout``."""
        try:
            response = session.get(f"{base_url}/isMember", params={"userId": user_id}, timeout=timeout)
            response.raise_for_status()
            return response.json(), None
        except (requests.RequestException, ValueError) as exc:
            return None, f"membership call failed: {type(exc).__name__}: {exc}"

    def with_membership(answer: Callable[[dict[str, Any]], ResponseReturnValue]) -> ResponseReturnValue:
        member, error = ask_membership(request.args.get("userId", "anonymous"))
        if member is None:
            app.logger.error(error)
            return jsonify(error=error), 502
        return answer(member)

    @app.get("/coupons")
    def coupons() -> ResponseReturnValue:
        def answer(member: dict[str, Any]) -> ResponseReturnValue:
            codes = ["WELCOME10"] + (["MEMBER20"] if member.get("isMember") else [])
            return jsonify(coupons=codes, isMember=bool(member.get("isMember")))

        return with_membership(answer)

    @app.post("/apply-coupon")
    def apply_coupon() -> ResponseReturnValue:
        def answer(member: dict[str, Any]) -> ResponseReturnValue:
            discount = 20 if member.get("isMember") else 10
            return jsonify(applied=True, discountPercent=discount)

        return with_membership(answer)


def _membership(app: Flask) -> None:
    @app.get("/isMember")
    def is_member() -> ResponseReturnValue:
        user_id = request.args.get("userId", "anonymous")
        # deterministic per user, so repeated requests see the same answer
        member = zlib.crc32(user_id.encode()) % 2 == 0
        return jsonify(userId=user_id, isMember=member)


def _inventory(app: Flask) -> None:
    @app.get("/inventory")
    def inventory() -> ResponseReturnValue:
        return jsonify(PRODUCTS)

    @app.post("/buy")
    def buy() -> ResponseReturnValue:
        product_id = request.args.get("id", type=int)
        if product_id is None or not any(p["id"] == product_id for p in PRODUCTS):
            return jsonify(error="unknown or missing product id"), 400
        time.sleep(float(os.environ.get("INVENTORY_BUY_DELAY_S", "1.0")))
        return jsonify(bought=product_id)


def _pricing(app: Flask) -> None:
    @app.get("/price")
    def price() -> ResponseReturnValue:
        product_id = request.args.get("id", type=int)
        if product_id is None:
            return jsonify(error="query parameter id (integer) is required"), 400
        base = PRICES.get(product_id, round(random.uniform(1, 100), 2))
        return jsonify(id=product_id, price=base)


_ROUTES: dict[str, Callable[[Flask], None]] = {
    "coupon": _coupon,
    "membership": _membership,
    "inventory": _inventory,
    "pricing": _pricing,
}


def create_app(service: str) -> Flask:
    """The Flask app of one demo service (coupon needs ``MEMBERSHIP_SERVICE_HOST``)."""
    if service not in _ROUTES:
        raise ValueError(f"unknown demo service {service!r}; choose one of {', '.join(SERVICES)}")
    app = Flask(f"otelgate-demo-{service}")
    _log_each_request(app)
    _health(app, service)
    _ROUTES[service](app)
    return app
