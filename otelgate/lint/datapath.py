"""``otelgate lint``: every source of telemetry reaches Dynatrace through the collector's pipelines.

The sources the manifests declare, each with the receiver it sends to and its signal:

- Kong's opentelemetry plugin (``traces_endpoint`` / ``logs_endpoint``) -> the otlp receiver: traces (logs);
- Kong's tcp-log plugin -> the tcp_log receiver: logs;
- the prometheus receiver's scrape of Kong's Status API: metrics;
- the apps the Instrumentation injects -> the otlp receiver: traces, and metrics / logs where the language's
  effective ``OTEL_METRICS_EXPORTER`` / ``OTEL_LOGS_EXPORTER`` is otlp (:mod:`.exporting`).

A source is lost when no pipeline of its signal both receives from its receiver and exports to the Dynatrace
exporter (the exporter whose endpoint is ``${env:DT_ENDPOINT}``). The collector starts only the receivers a pipeline
uses (a receiver in no pipeline does not even listen: Kong's tcp-log connection is refused), and a pipeline with
only ``debug`` writes to the collector's log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from otelgate.lint.exporting import defaults_for, effective, injecting_apps
from otelgate.lint.model import CollectorFacts, Manifests

BACKEND_ENV = "DT_ENDPOINT"
# a language whose logs need one more switch than OTEL_LOGS_EXPORTER=otlp: the Python SDK attaches its logging
# handler only when this is "true" (open-telemetry/opentelemetry-python@v1.39.1, the SDK of the Operator's
# autoinstrumentation-python 0.60b1: opentelemetry-sdk/src/opentelemetry/sdk/_configuration/__init__.py:471-479)
LOGS_SWITCH = {"python": ("OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED", "true")}


def _type(component: Any) -> str:
    return str(component).split("/", 1)[0]


def backend_exporters(config: dict[str, Any]) -> set[str]:
    """The exporters that send to Dynatrace: their endpoint reads ``DT_ENDPOINT``."""
    found = set()
    for name, settings in (config.get("exporters") or {}).items():
        endpoints = [str(v) for k, v in (settings or {}).items() if str(k).endswith("endpoint")]
        if any(BACKEND_ENV in e for e in endpoints):
            found.add(str(name))
    return found


def receiver_key(config: dict[str, Any], types: tuple[str, ...]) -> str | None:
    return next((str(k) for k in config.get("receivers") or {} if _type(k) in types), None)


def sources(m: Manifests, c: CollectorFacts, kong: dict[str, Any] | None) -> Iterator[tuple[str, str, str]]:
    """``(what, receiver, signal)`` of every source of telemetry the manifests declare."""
    otlp = receiver_key(c.config, ("otlp",))
    if kong is not None:
        plugins = {p.get("name"): (p.get("config") or {}) for p in kong.get("plugins") or [] if isinstance(p, dict)}
        otel = plugins.get("opentelemetry")
        if otel is not None and otlp is not None:
            if otel.get("traces_endpoint") or otel.get("endpoint"):
                yield "Kong's spans (opentelemetry plugin)", otlp, "traces"
            if otel.get("logs_endpoint"):
                yield "Kong's OTLP logs (opentelemetry plugin)", otlp, "logs"
        tcp_log = receiver_key(c.config, ("tcp_log", "tcplog"))
        if "tcp-log" in plugins and tcp_log is not None:
            yield "Kong's access logs (tcp-log plugin)", tcp_log, "logs"
    prometheus = receiver_key(c.config, ("prometheus",))
    if prometheus is not None:
        yield "Kong's metrics (the prometheus receiver's scrape)", prometheus, "metrics"
    if otlp is None:
        return
    for doc in m.objects("Instrumentation"):
        spec = doc.body.get("spec") or {}
        apps = injecting_apps(m, doc.namespace, doc.name)
        by_signal: dict[str, list[str]] = {}
        for language, injected in sorted(apps.items()):
            known = defaults_for(language, spec)
            exporters = {"traces": effective(spec, language, "OTEL_TRACES_EXPORTER", "otlp", "").value,
                         "metrics": effective(spec, language, "OTEL_METRICS_EXPORTER", known.metrics_exporter,
                                              "").value,
                         "logs": effective(spec, language, "OTEL_LOGS_EXPORTER", known.logs_exporter, "").value}
            if language == "go":  # the Go agent exports traces only
                exporters["metrics"] = exporters["logs"] = None
            if language in LOGS_SWITCH:
                switch, on = LOGS_SWITCH[language]
                if str(effective(spec, language, switch, "false", "").value).strip().lower() != on:
                    exporters["logs"] = None
            for signal, value in exporters.items():
                if "otlp" in str(value or "").split(","):
                    by_signal.setdefault(signal, []).extend(f"{language}: {app}" for app in injected)
        for signal, users in by_signal.items():
            yield f"the services' OTLP {signal} (Instrumentation/{doc.name}; {', '.join(users)})", otlp, signal


def check_data_paths(m: Manifests, c: CollectorFacts, kong: dict[str, Any] | None) -> None:
    backends = backend_exporters(c.config)
    if not backends:
        m.add(c.file, f"no exporter sends to ${{env:{BACKEND_ENV}}}: nothing reaches Dynatrace")
        return
    pipelines = ((c.config.get("service") or {}).get("pipelines")) or {}
    for what, receiver, signal in sources(m, c, kong):
        feeding = [name for name, p in pipelines.items()
                   if _type(name) == signal and receiver in ((p or {}).get("receivers") or [])]
        if any(set((pipelines[name] or {}).get("exporters") or []) & backends for name in feeding):
            continue
        where = (f"its {signal} pipelines {feeding} export only to "
                 f"{sorted({e for n in feeding for e in (pipelines[n] or {}).get('exporters') or []})}"
                 if feeding else f"no {signal} pipeline receives from {receiver}")
        m.add(c.file, f"{what} never reach Dynatrace: {where}, none to {sorted(backends)}")



# --- the Dynatrace exporter rides out throttling and outages ----------------------------------------------------------

_EXPORTERHELPER = "go.opentelemetry.io/collector/exporter/exporterhelper@v0.161.0 README.md"
_THROTTLING = ("Dynatrace throttles with 429 (https://docs.dynatrace.com/docs/dynatrace-api/basics/access-limit), "
               "which OTLP clients must retry (open-telemetry/opentelemetry-proto@v1.11.0 docs/specification.md:"
               "638-649)")


def check_backend_resilience(m: Manifests, c: CollectorFacts) -> None:
    """Retries and the sending queue stay on for the exporter to Dynatrace (both are on by default)."""
    for name in sorted(backend_exporters(c.config)):
        settings = (c.config.get("exporters") or {}).get(name) or {}
        if ((settings.get("retry_on_failure") or {}).get("enabled", True)) is False:
            m.add(c.file, f"exporter {name}: retry_on_failure is disabled, so every batch Dynatrace refuses for a "
                          f"moment is lost; {_THROTTLING}; keep it enabled (the default, {_EXPORTERHELPER}:12-13)")
        if ((settings.get("sending_queue") or {}).get("enabled", True)) is False:
            m.add(c.file, f"exporter {name}: sending_queue is disabled, so every export is synchronous and a slow or "
                          f"throttling Dynatrace stalls the pipelines and the receivers' callers (Kong) instead of "
                          f"being buffered; {_THROTTLING}; keep it enabled (the default, {_EXPORTERHELPER}:21-22)")


# --- what the tcp_log receiver's operators read from Kong's log line --------------------------------------------------

# the top-level fields of Kong 3.9's log line (kong.log.serialize(), Kong/kong@3.9.1 kong/pdk/log.lua:894-928), plus
# `trace_id`, which the propagating opentelemetry plugin sets as a serialize value (kong/observability/tracing/
# propagation/init.lua:214-220), plus the tcp-log plugin's custom_fields_by_lua keys
KONG_LOG_FIELDS = frozenset({
    "request", "upstream_uri", "upstream_status", "response", "latencies", "tries", "authenticated_entity", "route",
    "service", "consumer", "client_ip", "started_at", "source", "workspace", "workspace_name"})
_NESTED = ("timestamp", "trace_id", "span_id", "trace_flags", "severity", "scope_name")


def kong_log_fields(kong: dict[str, Any]) -> set[str]:
    plugins = {p.get("name"): (p.get("config") or {}) for p in kong.get("plugins") or [] if isinstance(p, dict)}
    fields = set(KONG_LOG_FIELDS) | set((plugins.get("tcp-log") or {}).get("custom_fields_by_lua") or {})
    if "opentelemetry" in plugins:
        fields.add("trace_id")
    return fields


def check_tcp_log_fields(m: Manifests, c: CollectorFacts, kong: dict[str, Any]) -> None:
    """Each ``parse_from`` of the tcp_log receiver's operators must name something the log line has: ``body`` (the
    line, where tcp_log puts it) until a parser moves Kong's JSON into ``attributes``, then ``attributes.<field>`` of
    a field Kong writes. A wrong one parses nothing (the operator's on_error passes the entry on unparsed)."""
    key = receiver_key(c.config, ("tcp_log", "tcplog"))
    if key is None:
        return
    fields = kong_log_fields(kong)
    parsed_into: str | None = None   # where Kong's JSON fields are after a parser ran
    for index, operator in enumerate(((c.config.get("receivers") or {}).get(key) or {}).get("operators") or []):
        operator = operator or {}
        where = f"receiver {key} operators[{index}] ({operator.get('type')})"
        own = operator.get("parse_from")
        if own is not None and (problem := _unknown_field(str(own), parsed_into, fields)):
            m.add(c.file, f"{where} parse_from = {own!r}: {problem}")
            return  # the operators after it read what it did not parse: one finding says it
        if str(operator.get("type", "")).endswith("_parser") and own == "body" and parsed_into is None:
            parsed_into = str(operator.get("parse_to", "attributes"))  # its timestamp/trace_id read the result
            if operator.get("type") == "json_parser" and operator.get("parse_ints") is not True:
                m.add(c.file, f"{where} parses Kong's log line without parse_ints: true, so its integers "
                              f"(response.status, request.size, latencies.*) reach Dynatrace as doubles (200.0); "
                              f"the json_parser parses numbers as float64 by default "
                              f"(open-telemetry/opentelemetry-collector-contrib@v0.165.0 pkg/stanza/docs/operators/"
                              f"json_parser.md:17)")
        for path, value in _parse_froms(operator):
            if problem := _unknown_field(str(value), parsed_into, fields):
                m.add(c.file, f"{where} {path} = {value!r}: {problem}")
                return


def _parse_froms(operator: dict[str, Any]) -> list[tuple[str, Any]]:
    """The nested ``parse_from`` settings (a parser's timestamp, trace ids, severity)."""
    found = []
    for nested in _NESTED:
        settings = operator.get(nested)
        if isinstance(settings, dict) and "parse_from" in settings:
            found.append((f"{nested}.parse_from", settings["parse_from"]))
    return found


def _unknown_field(value: str, parsed_into: str | None, fields: set[str]) -> str | None:
    if value == "body":
        return None
    root, _, rest = value.partition(".")
    if parsed_into is None:
        return "tcp_log puts each line into body; no parser has filled this field yet"
    if root != parsed_into:
        return f"Kong's fields are in {parsed_into} (the parser's parse_to)"
    top = rest.split(".", 1)[0]
    if top not in fields:
        return (f"Kong's log line has no field {top!r} (its fields: {', '.join(sorted(fields))}; Kong/kong@3.9.1 "
                f"kong/pdk/log.lua:894-928 and the tcp-log plugin's custom_fields_by_lua)")
    return None
