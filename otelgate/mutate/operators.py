"""Mutation operators: small, named, pure functions over one parsed manifest that yield single mutations.

Each operator takes the document it targets — the collector resource's ``spec.config`` (``collector``),
``kong.yaml`` (``kong``) or the ``Instrumentation`` resource (``instrumentation``) — and yields
:class:`Mutation` s: a stable path inside that document, a one-line description a person understands, and a mutated
deep copy (the input is never changed). :mod:`otelgate.mutate.catalog` applies every operator to the manifests.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

COLLECTOR, KONG, INSTRUMENTATION = "collector", "kong", "instrumentation"
TARGETS = (COLLECTOR, KONG, INSTRUMENTATION)


@dataclass(frozen=True)
class Mutation:
    """One change an operator made: where (a path inside the operator's document), what, and the result."""

    path: str
    description: str
    document: Any


@dataclass(frozen=True)
class Operator:
    name: str
    target: str
    summary: str  # the first line of the function's docstring
    generate: Callable[[Mapping[str, Any]], Iterator[Mutation]]


OPERATORS: dict[str, Operator] = {}


def operator(name: str, target: str) -> Callable[[Callable[[Mapping[str, Any]], Iterator[Mutation]]],
                                                  Callable[[Mapping[str, Any]], Iterator[Mutation]]]:
    """Register a generator as the operator ``name`` over documents of ``target``."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; one of {TARGETS}")

    def register(fn: Callable[[Mapping[str, Any]], Iterator[Mutation]]) -> Callable[[Mapping[str, Any]],
                                                                                  Iterator[Mutation]]:
        if name in OPERATORS:
            raise ValueError(f"operator {name!r} registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        if not summary:
            raise ValueError(f"operator {name!r} needs a docstring (its one-line summary)")
        OPERATORS[name] = Operator(name, target, summary, fn)
        return fn

    return register


def _copy(doc: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(dict(doc))


def _pipelines(config: Mapping[str, Any]) -> dict[str, Any]:
    return dict((config.get("service") or {}).get("pipelines") or {})


# ------------------------------------------------------------------------------------------------- collector

def _remove_from_pipelines(config: Mapping[str, Any], kind: str) -> Iterator[Mutation]:
    for pipeline, spec in _pipelines(config).items():
        for index, component in enumerate((spec or {}).get(kind) or []):
            out = _copy(config)
            del out["service"]["pipelines"][pipeline][kind][index]
            yield Mutation(f"service.pipelines.{pipeline}.{kind}.{component}",
                           f"pipeline {pipeline} loses {kind[:-1]} {component}", out)


@operator("remove-processor", COLLECTOR)
def remove_processor(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Remove one processor from one pipeline."""
    yield from _remove_from_pipelines(config, "processors")


@operator("remove-receiver", COLLECTOR)
def remove_receiver(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Remove one receiver from one pipeline."""
    yield from _remove_from_pipelines(config, "receivers")


@operator("remove-exporter", COLLECTOR)
def remove_exporter(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Remove one exporter from one pipeline."""
    yield from _remove_from_pipelines(config, "exporters")


@operator("swap-processors", COLLECTOR)
def swap_processors(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Swap two neighbouring processors of one pipeline (the order is the processing order)."""
    for pipeline, spec in _pipelines(config).items():
        processors = list((spec or {}).get("processors") or [])
        for i in range(len(processors) - 1):
            out = _copy(config)
            swapped = out["service"]["pipelines"][pipeline]["processors"]
            swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
            yield Mutation(f"service.pipelines.{pipeline}.processors.{processors[i]}<>{processors[i + 1]}",
                           f"pipeline {pipeline} runs {processors[i + 1]} before {processors[i]}", out)


_HOST_PORT = re.compile(r"^(?P<host>[^:/\s]+):(?P<port>\d+)$")


@operator("change-listen-port", COLLECTOR)
def change_listen_port(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Move one receiver's, extension's or exporter's listen address to the next port."""
    for section in ("receivers", "extensions", "exporters"):
        for component, spec in (config.get(section) or {}).items():
            for path, value in _walk(spec):
                key = path.rsplit(".", 1)[-1]
                match = _HOST_PORT.match(value) if isinstance(value, str) else None
                if key in ("endpoint", "listen_address") and match:
                    new = f"{match['host']}:{int(match['port']) + 1}"
                    out = _copy(config)
                    _set(out[section][component], path, new)
                    yield Mutation(f"{section}.{component}.{path}", f"{component} listens on {new} instead of {value}",
                                   out)


@operator("auth-header", COLLECTOR)
def auth_header(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Change an exporter's Authorization header: its scheme (Api-Token -> Bearer) or its name."""
    for exporter, spec in (config.get("exporters") or {}).items():
        headers = (spec or {}).get("headers") or {}
        for name, value in headers.items():
            scheme, _, rest = str(value).partition(" ")
            if rest:
                out = _copy(config)
                out["exporters"][exporter]["headers"][name] = f"Bearer {rest}"
                yield Mutation(f"exporters.{exporter}.headers.{name}.scheme",
                               f"{exporter} sends '{name}: Bearer …' instead of '{scheme} …'", out)
            out = _copy(config)
            out["exporters"][exporter]["headers"] = {("X-" + name if name.lower() == "authorization"
                                                      else "Authorization"): value,
                                                     **{k: v for k, v in headers.items() if k != name}}
            renamed = next(iter(out["exporters"][exporter]["headers"]))
            yield Mutation(f"exporters.{exporter}.headers.{name}.name",
                           f"{exporter} sends its token in header {renamed} instead of {name}", out)


@operator("attributes-action", COLLECTOR)
def attributes_action(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Narrow an attributes processor's action: insert -> update (only touches existing keys), or rename its key."""
    for processor, spec in (config.get("processors") or {}).items():
        if processor.split("/")[0] != "attributes":
            continue
        for index, action in enumerate((spec or {}).get("actions") or []):
            if action.get("action") in ("insert", "upsert"):
                out = _copy(config)
                out["processors"][processor]["actions"][index]["action"] = "update"
                yield Mutation(f"processors.{processor}.actions[{index}].action",
                               f"{processor} only updates {action.get('key')} (never inserts it)", out)
            out = _copy(config)
            out["processors"][processor]["actions"][index]["key"] = f"{action.get('key')}_"
            yield Mutation(f"processors.{processor}.actions[{index}].key",
                           f"{processor} writes {action.get('key')}_ instead of {action.get('key')}", out)


def _tcplog_operators(config: Mapping[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    for receiver, spec in (config.get("receivers") or {}).items():
        if receiver.split("/")[0] == "tcp_log" and isinstance((spec or {}).get("operators"), list):
            yield receiver, spec["operators"]


@operator("tcplog-drop-operator", COLLECTOR)
def tcplog_drop_operator(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Drop one operator (e.g. the trace_parser) of a tcp_log receiver."""
    for receiver, operators in _tcplog_operators(config):
        for index, op in enumerate(operators):
            out = _copy(config)
            del out["receivers"][receiver]["operators"][index]
            yield Mutation(f"receivers.{receiver}.operators[{index}:{op.get('type')}]",
                           f"{receiver} no longer runs its {op.get('type')}", out)


@operator("tcplog-parse-from", COLLECTOR)
def tcplog_parse_from(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Point one ``parse_from`` of a tcp_log operator at a neighbouring (wrong) field."""
    for receiver, operators in _tcplog_operators(config):
        for index, op in enumerate(operators):
            for path, value in _walk(op):
                if path.rsplit(".", 1)[-1] == "parse_from" and isinstance(value, str):
                    new = "attributes.body" if value == "body" else f"{value}_"
                    out = _copy(config)
                    _set(out["receivers"][receiver]["operators"][index], path, new)
                    yield Mutation(f"receivers.{receiver}.operators[{index}:{op.get('type')}].{path}",
                                   f"{receiver}'s {op.get('type')} parses {new} instead of {value}", out)


@operator("flip-boolean-collector", COLLECTOR)
def flip_boolean_collector(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Flip one boolean setting of one receiver, processor or exporter."""
    for section in ("receivers", "processors", "exporters"):
        for component, spec in (config.get(section) or {}).items():
            for path, value in _walk(spec):
                if isinstance(value, bool):
                    out = _copy(config)
                    _set(out[section][component], path, not value)
                    yield Mutation(f"{section}.{component}.{path}", f"{component} {path}: {value} -> {not value}", out)


@operator("scrape-setting", COLLECTOR)
def scrape_setting(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Change a Prometheus scrape job's interval (5s -> 60s) or metrics path."""
    for receiver, spec in (config.get("receivers") or {}).items():
        jobs = (((spec or {}).get("config") or {}).get("scrape_configs") or []) if receiver.startswith(
            "prometheus") else []
        for index, job in enumerate(jobs):
            name = job.get("job_name", index)
            for key, new in (("scrape_interval", "60s"), ("metrics_path", "/metric")):
                out = _copy(config)
                out["receivers"][receiver]["config"]["scrape_configs"][index][key] = new
                yield Mutation(f"receivers.{receiver}.config.scrape_configs[{name}].{key}",
                               f"scrape job {name} {key}: {job.get(key, '(default)')} -> {new}", out)


@operator("batch-timeout", COLLECTOR)
def batch_timeout(config: Mapping[str, Any]) -> Iterator[Mutation]:
    """Raise a batch processor's timeout to 5s (data waits longer; nothing else changes)."""
    for processor, spec in (config.get("processors") or {}).items():
        if processor.split("/")[0] == "batch":
            out = _copy(config)
            out["processors"][processor] = {**(spec or {}), "timeout": "5s"}
            was = (spec or {}).get("timeout")
            yield Mutation(f"processors.{processor}.timeout", f"{processor} timeout {was} -> 5s", out)


# ------------------------------------------------------------------------------------------------------ kong

def _plugins(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc.get("plugins") or [] if isinstance(p, dict)]


def _plugin_index(doc: Mapping[str, Any], name: str) -> int | None:
    for index, plugin in enumerate(doc.get("plugins") or []):
        if isinstance(plugin, dict) and plugin.get("name") == name:
            return index
    return None


def _with_plugin_config(doc: Mapping[str, Any], name: str, path: str, value: Any) -> dict[str, Any] | None:
    index = _plugin_index(doc, name)
    if index is None:
        return None
    out = _copy(doc)
    out["plugins"][index].setdefault("config", {})
    _set(out["plugins"][index]["config"], path, value)
    return out


@operator("remove-plugin", KONG)
def remove_plugin(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Remove one plugin from kong.yaml."""
    for index, plugin in enumerate(doc.get("plugins") or []):
        out = _copy(doc)
        del out["plugins"][index]
        yield Mutation(f"plugins[{plugin.get('name')}]", f"Kong runs without its {plugin.get('name')} plugin", out)


@operator("flip-boolean-kong", KONG)
def flip_boolean_kong(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Flip one boolean of one plugin's config."""
    for plugin in _plugins(doc):
        for path, value in _walk(plugin.get("config") or {}):
            if isinstance(value, bool):
                out = _with_plugin_config(doc, str(plugin.get("name")), path, not value)
                yield Mutation(f"plugins[{plugin.get('name')}].config.{path}",
                               f"{plugin.get('name')} {path}: {value} -> {not value}", out)


_URL = re.compile(r"^(?P<scheme>https?)://(?P<host>[^:/]+)(?::(?P<port>\d+))?(?P<path>/.*)?$")


@operator("plugin-endpoint", KONG)
def plugin_endpoint(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Change a plugin's collector endpoint: the URL's host, port or path, or tcp-log's host or port."""
    for plugin in _plugins(doc):
        name = str(plugin.get("name"))
        for path, value in _walk(plugin.get("config") or {}):
            match = _URL.match(value) if isinstance(value, str) and path.endswith("endpoint") else None
            if match:
                port = int(match["port"] or 80)
                new_port = 4317 if port == 4318 else port + 1
                variants = {
                    "host": value.replace(match["host"], "otel-collector", 1),
                    "port": f"{match['scheme']}://{match['host']}:{new_port}{match['path'] or ''}",
                    "path": f"{match['scheme']}://{match['host']}:{port}/v1/logs",
                }
                for part, new in variants.items():
                    yield Mutation(f"plugins[{name}].config.{path}.{part}", f"{name} sends to {new}",
                                   _with_plugin_config(doc, name, path, new))
        config = plugin.get("config") or {}
        if "host" in config and "port" in config:
            yield Mutation(f"plugins[{name}].config.host", f"{name} sends to host otel-collector",
                           _with_plugin_config(doc, name, "host", "otel-collector"))
            yield Mutation(f"plugins[{name}].config.port", f"{name} sends to port {int(config['port']) + 1}",
                           _with_plugin_config(doc, name, "port", int(config["port"]) + 1))


@operator("sampling-zero", KONG)
def sampling_zero(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Set the opentelemetry plugin's sampling_rate to 0."""
    out = _with_plugin_config(doc, "opentelemetry", "sampling_rate", 0.0)
    if out is not None:
        yield Mutation("plugins[opentelemetry].config.sampling_rate", "opentelemetry sampling_rate: 0 (nothing traced)",
                       out)


@operator("propagation", KONG)
def propagation(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Change the opentelemetry plugin's propagation: extract only b3, inject only b3, or default_format b3."""
    variants = {
        "extract": ({"extract": ["b3"]}, "extracts only b3 (ignores an incoming traceparent)"),
        "inject": ({"inject": ["b3"]}, "injects only b3 upstream (services see no traceparent)"),
        "default_format": ({"default_format": "b3"}, "default_format b3"),
    }
    if _plugin_index(doc, "opentelemetry") is None:
        return
    for key, (value, text) in variants.items():
        yield Mutation(f"plugins[opentelemetry].config.propagation.{key}", f"opentelemetry propagation {text}",
                       _with_plugin_config(doc, "opentelemetry", "propagation", value))


LUA_VARIANTS: dict[str, tuple[str | None, str]] = {
    "returns-nil": ("return nil\n", "returns nil (no trace_id field)"),
    "returns-table": ("return kong.log.serialize().trace_id\n", "returns the {w3c=…} table unchanged"),
    "returns-other-field": ("return kong.log.serialize().request.id\n", "returns the request id instead"),
    "runtime-error": ('error("otelgate mutant")\n', "raises a runtime error"),
    "forbidden-global": ('return os.getenv("HOME")\n', "uses os, which Kong's sandbox forbids"),
    "removed": (None, "is removed (the serializer's trace_id map is logged)"),
}


@operator("custom-fields-lua", KONG)
def custom_fields_lua(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Replace one custom_fields_by_lua snippet by a plausible mistake, or remove it (see LUA_VARIANTS)."""
    for plugin in _plugins(doc):
        fields = (plugin.get("config") or {}).get("custom_fields_by_lua") or {}
        for field_name in fields:
            for variant, (code, text) in LUA_VARIANTS.items():
                name = str(plugin.get("name"))
                out = _with_plugin_config(doc, name, "custom_fields_by_lua", {
                    **{k: v for k, v in fields.items() if k != field_name},
                    **({field_name: code} if code is not None else {})})
                yield Mutation(f"plugins[{name}].config.custom_fields_by_lua.{field_name}.{variant}",
                               f"{name}'s {field_name} snippet {text}", out)


@operator("resource-attribute", KONG)
def resource_attribute(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Change one of the opentelemetry plugin's resource_attributes (e.g. service.name)."""
    index = _plugin_index(doc, "opentelemetry")
    if index is None:
        return
    for key, value in ((doc["plugins"][index].get("config") or {}).get("resource_attributes") or {}).items():
        out = _copy(doc)
        out["plugins"][index]["config"]["resource_attributes"][key] = f"{value}-mutant"
        yield Mutation(f"plugins[opentelemetry].config.resource_attributes.{key}",
                       f"Kong's spans carry {key}={value}-mutant", out)


# ----------------------------------------------------------------------------------------------- instrumentation

@operator("propagators", INSTRUMENTATION)
def propagators(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Remove one propagator, or replace them all by b3."""
    current = list((doc.get("spec") or {}).get("propagators") or [])
    for name in current:
        out = _copy(doc)
        out["spec"]["propagators"] = [p for p in current if p != name]
        yield Mutation(f"spec.propagators.{name}", f"the services no longer propagate {name}", out)
    if current:
        out = _copy(doc)
        out["spec"]["propagators"] = ["b3"]
        yield Mutation("spec.propagators=b3", "the services propagate only b3", out)


@operator("sampler", INSTRUMENTATION)
def sampler(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Change the SDK sampler's type or argument."""
    current = dict((doc.get("spec") or {}).get("sampler") or {})
    variants = [("type", "always_off"), ("type", "parentbased_always_off"), ("type", "traceidratio"),
                ("argument", "0"), ("argument", "0.5")]
    for key, value in variants:
        if current.get(key) == value:
            continue
        out = _copy(doc)
        out["spec"].setdefault("sampler", {})[key] = value
        yield Mutation(f"spec.sampler.{key}={value}", f"sampler {key}: {current.get(key)} -> {value}", out)


@operator("exporter-endpoint", INSTRUMENTATION)
def exporter_endpoint(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Change the Instrumentation's exporter endpoint (port 4318 -> 4317, or the host)."""
    endpoint = str(((doc.get("spec") or {}).get("exporter") or {}).get("endpoint") or "")
    match = _URL.match(endpoint)
    if not match:
        return
    port = int(match["port"] or 80)
    new_port = 4317 if port == 4318 else port + 1
    for part, new in (("port", endpoint.replace(f":{port}", f":{new_port}", 1)),
                      ("host", endpoint.replace(match["host"], "otel-collector", 1))):
        out = _copy(doc)
        out["spec"]["exporter"]["endpoint"] = new
        yield Mutation(f"spec.exporter.endpoint.{part}", f"the services export to {new}", out)


def _language_env(doc: Mapping[str, Any]) -> Iterator[tuple[str, int, Mapping[str, Any]]]:
    for language, spec in (doc.get("spec") or {}).items():
        if isinstance(spec, dict) and isinstance(spec.get("env"), list):
            for index, item in enumerate(spec["env"]):
                if isinstance(item, dict):
                    yield language, index, item


@operator("env-protocol", INSTRUMENTATION)
def env_protocol(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Switch one language's OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf <-> grpc)."""
    for language, index, item in _language_env(doc):
        if item.get("name") == "OTEL_EXPORTER_OTLP_PROTOCOL":
            new = "grpc" if item.get("value") != "grpc" else "http/protobuf"
            out = _copy(doc)
            out["spec"][language]["env"][index]["value"] = new
            yield Mutation(f"spec.{language}.env.OTEL_EXPORTER_OTLP_PROTOCOL",
                           f"{language} services export with protocol {new}", out)


@operator("drop-env", INSTRUMENTATION)
def drop_env(doc: Mapping[str, Any]) -> Iterator[Mutation]:
    """Remove one per-language environment variable."""
    for language, index, item in _language_env(doc):
        out = _copy(doc)
        del out["spec"][language]["env"][index]
        yield Mutation(f"spec.{language}.env.{item.get('name')}",
                       f"{language} services lose {item.get('name')}={item.get('value')}", out)


# ------------------------------------------------------------------------------------------------- helpers

def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every scalar under ``node``; list items as ``key[i]``."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{prefix}[{index}]")
    else:
        yield prefix, node


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _set(node: Any, path: str, value: Any) -> None:
    """Set the value at a dotted path as :func:`_walk` spells it (intermediate mappings are created)."""
    steps: list[str | int] = [int(index) if index else key for key, index in _STEP.findall(path)]
    for step in steps[:-1]:
        node = node[step] if isinstance(step, int) else node.setdefault(step, {})
    node[steps[-1]] = value
