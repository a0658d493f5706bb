"""Which spans Kong 3.9 creates for one proxied request, by ``tracing_instrumentations``: an oracle written from
Kong's source, sharing nothing with :mod:`otelgate.kongsim` (the simulator it judges).

Sources (Kong/kong@3.9.1):
- kong.conf.default:91-106: the valid instrumentation names (``off``, ``request``, ``all``, ``db_query``,
  ``dns_query``, ``router``, ``http_client``, ``balancer``, ``plugin_rewrite``, ``plugin_access``,
  ``plugin_header_filter``).
- kong/observability/tracing/instrumentation.lua:403-437 (``init``): ``off`` turns every instrumentation and the
  root span off; a list other than ``all`` turns off each instrumentation it does not name; the root span
  (``request``, :225-262) is not among the switchable ones, so it exists whenever tracing is on.
- instrumentation.lua:61-66 ``kong.router`` (one per request, kong/runloop/handler.lua:1171);
  :77-152 ``kong.balancer``, one per try (CLIENT); :154-172 ``kong.<phase>.plugin.<name>`` for each plugin that
  runs in the rewrite / access / header_filter phase (kong/init.lua:332, :383, :453 — the iterator holds only the
  plugins implementing that phase); :284-309 ``kong.dns`` around ``toip``, which the balancer calls when the
  upstream host is a name, not for an IP address (kong/runloop/balancer/init.lua:289-296 and :374). Retries
  resolve again, but in the ``balancer`` phase, where ``start_span`` returns a no-op span (kong/pdk/tracing.lua:
  436-444 VALID_TRACING_PHASES has no ``balancer``; :509-515): only the first try's ``kong.dns`` is recorded.
- ``kong.database.query`` (db_query) and ``kong.internal.request`` (http_client) are not created per proxied
  request in a DB-less node whose plugins make no HTTP calls on the request path; this oracle counts none.
- Phase handlers of the plugins otelgate configures: kong/plugins/opentelemetry/handler.lua:28 ``access``, :36
  ``header_filter``, :44 ``log``; kong/plugins/prometheus/handler.lua:27 ``log`` only;
  kong/plugins/tcp-log/handler.lua:70 ``log`` only.
"""

from __future__ import annotations

from collections.abc import Iterable

SWITCHABLE = ("db_query", "dns_query", "router", "http_client", "balancer", "plugin_rewrite", "plugin_access",
              "plugin_header_filter")
VALID = ("off", "request", "all", *SWITCHABLE)
PLUGIN_PHASES: dict[str, frozenset[str]] = {
    "opentelemetry": frozenset({"access", "header_filter", "log"}),
    "prometheus": frozenset({"log"}),
    "tcp-log": frozenset({"log"}),
}
PLUGIN_SPAN_PHASES = ("rewrite", "access", "header_filter")


def parse_instrumentations(value: str | Iterable[str]) -> frozenset[str]:
    """kong.conf ``tracing_instrumentations`` (comma-separated or a list) as a set of names; bad names refused."""
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    if not names:
        raise ValueError("tracing_instrumentations is empty (Kong's default is 'off')")
    unknown = sorted(set(names) - set(VALID))
    if unknown:
        raise ValueError(f"unknown tracing_instrumentations {unknown}; valid: {', '.join(VALID)}")
    return frozenset(names)


def enabled(instrumentations: str | Iterable[str]) -> frozenset[str]:
    """The switchable instrumentations in effect (empty when tracing is off)."""
    names = parse_instrumentations(instrumentations)
    if "off" in names:
        return frozenset()
    return frozenset(SWITCHABLE) if "all" in names else names & frozenset(SWITCHABLE)


def expected_kong_spans(instrumentations: str | Iterable[str], *, upstream_is_hostname: bool = True, tries: int = 1,
                        plugins: Iterable[str] = ("opentelemetry", "prometheus", "tcp-log")) -> dict[str, int]:
    """Span name -> how many Kong creates for one proxied request (none when ``off``)."""
    if tries < 1:
        raise ValueError(f"a proxied request has at least one balancer try, got tries={tries}")
    names = parse_instrumentations(instrumentations)
    if "off" in names:
        return {}
    on = enabled(names)
    spans: dict[str, int] = {"kong": 1}
    if "router" in on:
        spans["kong.router"] = 1
    for phase in PLUGIN_SPAN_PHASES:
        if f"plugin_{phase}" not in on:
            continue
        for plugin in plugins:
            if plugin not in PLUGIN_PHASES:
                raise ValueError(f"no phase table for plugin {plugin!r}; known: {', '.join(PLUGIN_PHASES)}")
            if phase in PLUGIN_PHASES[plugin]:
                spans[f"kong.{phase}.plugin.{plugin}"] = 1
    if "dns_query" in on and upstream_is_hostname:
        spans["kong.dns"] = 1
    if "balancer" in on:
        spans["kong.balancer"] = tries
    return spans
