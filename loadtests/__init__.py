"""Load generation for otelgate: the locust users (``locustfile.py``) and the sampling-rate sweep (``sweep.py``).

locust (and so gevent, which monkey-patches on import) is only ever imported in the locust subprocesses, never in
the harness or pytest process. What both sides need (the routes, the weight syntax) lives here, free of locust.
"""

from __future__ import annotations

from otelgate import topology

# route name -> request path, as the deployment's otelgate.toml declares them (otelgate.topology)
ROUTES: dict[str, str] = {name: route.path for name, route in topology.current().routes.items()}
DEFAULT_ROUTE_WEIGHTS = ",".join(f"{name}=1" for name in ROUTES)


def parse_weights(text: str) -> dict[str, float]:
    """``coupon=2,inventory=1`` -> ``{"coupon": 2.0, "inventory": 1.0}``; a route not named is not called."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or name not in ROUTES:
            raise ValueError(f"route weight {part!r}: expected <route>=<number> with route one of {sorted(ROUTES)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"route weight {part!r}: {value!r} is not a number") from None
        if not weight >= 0:
            raise ValueError(f"route weight {part!r} must be a number >= 0")
        weights[name] = weight
    if not any(weights.values()):
        raise ValueError(f"route weights {text!r}: at least one route needs a positive weight")
    return weights
