"""``otelgate lint``: what the collector can bind, and what each injected language's SDK will actually send.

- Two collector listeners on one port: the collector cannot start (the second bind fails with "address already in
  use"; otelgate's v0.161.0 build exits 1 with ``cannot start pipelines: failed to start "otlp" receiver: listen tcp
  …: bind: address already in use``).
- Per language an app injects: the *effective* OTLP protocol — ``spec.<language>.env``, else ``spec.env``, else what
  the Operator 0.148.0 injects, else the SDK's own default (:data:`LANGUAGES`, each with its source) — must be the
  protocol of the collector receiver on the endpoint's port; and a language whose logs exporter is off only by
  default sends no logs although the collector's logs pipeline receives OTLP.

Precedence as the Operator applies it (open-telemetry/opentelemetry-operator@v0.148.0): the language's env first
(``appendIfNotSet``, internal/instrumentation/python.go:57 and the other languages' inject functions), then
``spec.env`` where still unset (internal/instrumentation/sdk.go:379-384), then the language defaults (Python:
sdk.go:399-401 with python.go:117-139), then ``OTEL_EXPORTER_OTLP_ENDPOINT`` = ``spec.exporter.endpoint`` where still
unset (internal/instrumentation/exporter.go:17-23, called from sdk.go:426 for every language, Go's sidecar included).
The agents' versions are the Operator's default images (versions.txt:18 java 1.33.6, :22 nodejs 0.71.0, :26 python
0.60b1, :30 dotnet 1.2.0, :33 go v0.23.0).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from otelgate.lint.model import CollectorFacts, Manifests, pod_templates, port_of, url_parts
from otelgate.lint.resources import INJECT_PREFIX

PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
LOGS_EXPORTER = "OTEL_LOGS_EXPORTER"


@dataclass(frozen=True)
class Defaults:
    """What a language's agent does with a variable nobody set (the Operator 0.148.0's default image)."""

    agent: str
    protocol: str
    protocol_source: str
    logs_exporter: str | None     # None: the agent exports no logs at all (nothing to check)
    logs_source: str
    metrics_exporter: str | None = None   # None: exports no metrics, or not judged (Java)
    metrics_source: str = ""


_SPEC = "https://opentelemetry.io/docs/specs/otel/protocol/exporter/#specify-protocol"
LANGUAGES: dict[str, Defaults] = {
    # the Operator sets both when unset: "it is what our autoinstrumentation supports"
    "python": Defaults(
        "the Operator 0.148.0",
        "http/protobuf",
        "open-telemetry/opentelemetry-operator@v0.148.0 internal/instrumentation/python.go:117-123, sdk.go:400",
        "otlp",
        "open-telemetry/opentelemetry-operator@v0.148.0 internal/instrumentation/python.go:134-138, sdk.go:400",
        "otlp",
        "open-telemetry/opentelemetry-operator@v0.148.0 internal/instrumentation/python.go:129-133, sdk.go:400"),
    # NodeSDK of @opentelemetry/sdk-node 0.57 (auto-instrumentations-node 0.56.0, the image the manifests pin) and
    # 0.71.0 (the Operator's default image) alike
    "nodejs": Defaults(
        "the Node.js SDK (sdk-node 0.57, auto-instrumentations-node 0.56.0)",
        "http/protobuf", "open-telemetry/opentelemetry-js@experimental/v0.57.2 "
                         "packages/opentelemetry-core/src/utils/environment.ts:234",
        "otlp", "open-telemetry/opentelemetry-js@experimental/v0.57.2 "
                "experimental/packages/opentelemetry-sdk-node/src/sdk.ts:455-460",
        "none", "open-telemetry/opentelemetry-js@experimental/v0.57.2 "
                "experimental/packages/opentelemetry-sdk-node/src/sdk.ts:112-115"),
    # the Operator 0.148.0 still injects Java agent 1.33.6 (versions.txt: "should not be greater than 1.x.x");
    # 2.0.0 changed both defaults
    "java": Defaults(
        "the Java agent 1.33.6, the Operator 0.148.0's image",
        "grpc", "https://github.com/open-telemetry/opentelemetry-java-instrumentation/releases/tag/v2.0.0 "
                "(\"The default OTLP protocol has been changed from grpc to http/protobuf\")",
        "none", "https://github.com/open-telemetry/opentelemetry-java-instrumentation/releases/tag/v2.0.0 "
                "(\"The OTLP logs exporter is now enabled by default\")"),
    "dotnet": Defaults(
        "the .NET agent 1.2.0, the Operator 0.148.0's image",
        "http/protobuf", "open-telemetry/opentelemetry-dotnet-instrumentation@v1.2.0 docs/config.md:282",
        "otlp", "open-telemetry/opentelemetry-dotnet-instrumentation@v1.2.0 docs/config.md:244",
        "otlp", "open-telemetry/opentelemetry-dotnet-instrumentation@v1.2.0 docs/config.md:243"),
    # the Go agent exports traces only (its exporter comes from autoexport.NewSpanExporter)
    "go": Defaults(
        "the Go agent v0.23.0, the Operator 0.148.0's image",
        "http/protobuf", "open-telemetry/opentelemetry-go-contrib@exporters/autoexport/v0.63.0 "
                         "exporters/autoexport/spans.go:40-45 (the version go-instrumentation v0.23.0 requires)",
        None, "open-telemetry/opentelemetry-go-instrumentation@v0.23.0 pipeline/otelsdk/config.go:160"),
}
JAVA_2_DEFAULTS = Defaults("the Java agent 2.x", "http/protobuf", _SPEC, "otlp", _SPEC)


def defaults_for(language: str, spec: dict[str, Any]) -> Defaults:
    """A Java image of agent 2.x or later (``spec.java.image`` tag) has the specification's defaults."""
    found = LANGUAGES[language]
    if language == "java":
        tag = str((spec.get("java") or {}).get("image") or "").rpartition(":")[2]
        major = re.match(r"v?(\d+)\.", tag)
        if major and int(major.group(1)) >= 2:
            return JAVA_2_DEFAULTS
    return found


@dataclass(frozen=True)
class Effective:
    value: str | None
    source: str       # where the value comes from (spec.<language>.env, spec.env, a default's citation)
    defaulted: bool


def effective(spec: dict[str, Any], language: str, name: str, fallback: str | None, fallback_source: str
              ) -> Effective:
    for where, env in ((f"spec.{language}.env", (spec.get(language) or {}).get("env")), ("spec.env", spec.get("env"))):
        for item in env or []:
            if isinstance(item, dict) and item.get("name") == name and "value" in item:
                return Effective(str(item["value"]), where, False)
    return Effective(fallback, fallback_source, True)


def injecting_apps(m: Manifests, namespace: str, name: str) -> dict[str, list[str]]:
    """``{language: ["Deployment/coupon", …]}`` of the workloads whose pod annotations inject this Instrumentation
    (``inject-<language>``: its name, ``namespace/name``, or ``"true"`` in its namespace)."""
    apps: dict[str, list[str]] = {}
    for doc, template in pod_templates(m):
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        for key, value in annotations.items():
            language = str(key).removeprefix(INJECT_PREFIX)
            if not str(key).startswith(INJECT_PREFIX) or language not in LANGUAGES:
                continue
            text = str(value)
            ns, _, wanted = text.rpartition("/")
            if (text == "true" and doc.namespace == namespace) or (
                    wanted == name and (ns or doc.namespace) == namespace):
                apps.setdefault(language, []).append(f"{doc.kind}/{doc.name}")
    return apps


def check_protocols(m: Manifests, c: CollectorFacts) -> None:
    """Each injected language's effective protocol against the receiver listening on its endpoint's port."""
    receivers = {port: protocol for protocol, port in (("grpc", c.otlp_grpc), ("http", c.otlp_http))
                 if port is not None}
    logs_otlp = any(str(r).split("/", 1)[0] == "otlp" for r in _pipeline_receivers(c, "logs"))
    for doc in m.objects("Instrumentation"):
        spec = doc.body.get("spec") or {}
        exporter_endpoint = (spec.get("exporter") or {}).get("endpoint")
        for language, apps in sorted(injecting_apps(m, doc.namespace, doc.name).items()):
            known = defaults_for(language, spec)
            where = f"Instrumentation/{doc.name} {language} (injected into {', '.join(sorted(apps))})"
            endpoint = effective(spec, language, ENDPOINT, exporter_endpoint, "spec.exporter.endpoint")
            host, port, _ = url_parts(endpoint.value)
            protocol = effective(spec, language, PROTOCOL, known.protocol, f"default of {known.agent}: "
                                                                            f"{known.protocol_source}")
            # an endpoint on any other port than otlp http is reported by crossrefs.check_instrumentation_endpoints
            if endpoint.value and host == c.service_dns and port == c.otlp_http and port in receivers:
                wanted = receivers[port]
                have = "grpc" if protocol.value == "grpc" else "http"
                if have != wanted:
                    m.add(doc.file, f"{where}: {PROTOCOL} is {protocol.value} ({protocol.source}) but its endpoint "
                                    f"port {port} ({endpoint.source}) is the collector's otlp {wanted} receiver "
                                    f"({c.file}): these apps cannot export")
            if logs_otlp and known.logs_exporter is not None:
                logs = effective(spec, language, LOGS_EXPORTER, known.logs_exporter,
                                 f"default of {known.agent}: {known.logs_source}")
                if logs.defaulted and "otlp" not in str(logs.value).split(","):
                    m.add(doc.file, f"{where}: {LOGS_EXPORTER} is unset and defaults to {logs.value} "
                                    f"({logs.source}): these apps send no logs, although the collector's logs "
                                    f"pipeline receives OTLP ({c.file}); set it to otlp")


def _pipeline_receivers(c: CollectorFacts, signal: str) -> Iterator[str]:
    for name, pipeline in (((c.config.get("service") or {}).get("pipelines")) or {}).items():
        if str(name).split("/", 1)[0] == signal:
            yield from (pipeline or {}).get("receivers") or []


# --- listeners ------------------------------------------------------------------------------------------------------


def listeners(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(what, host:port)`` of every address the collector binds: receivers used by a pipeline (``endpoint``,
    ``listen_address``, each ``protocols.*.endpoint``), extensions the service enables, exporters used by a pipeline
    that serve (``endpoint``: the prometheus exporter), and the collector's own metrics (``service.telemetry``)."""
    service = config.get("service") or {}
    pipelines = [p or {} for p in (service.get("pipelines") or {}).values()]
    used = {kind: {c for p in pipelines for c in p.get(kind) or []} for kind in ("receivers", "exporters")}
    for name in sorted(used["receivers"]):
        settings = (config.get("receivers") or {}).get(name) or {}
        for key in ("endpoint", "listen_address"):
            if settings.get(key):
                yield f"receiver {name}", str(settings[key])
        for protocol, proto_settings in (settings.get("protocols") or {}).items():
            if (proto_settings or {}).get("endpoint"):
                yield f"receiver {name} {protocol}", str(proto_settings["endpoint"])
    for name in service.get("extensions") or []:
        settings = (config.get("extensions") or {}).get(name) or {}
        if settings.get("endpoint"):
            yield f"extension {name}", str(settings["endpoint"])
    for name in sorted(used["exporters"]):
        if str(name).split("/", 1)[0] == "prometheus":
            settings = (config.get("exporters") or {}).get(name) or {}
            if settings.get("endpoint"):
                yield f"exporter {name}", str(settings["endpoint"])
    for reader in ((service.get("telemetry") or {}).get("metrics") or {}).get("readers") or []:
        prometheus = (((reader or {}).get("pull") or {}).get("exporter") or {}).get("prometheus") or {}
        if prometheus.get("port"):
            yield "service.telemetry metrics", f"{prometheus.get('host', 'localhost')}:{prometheus['port']}"


def check_listeners(m: Manifests, c: CollectorFacts) -> None:
    """Two listeners on one port: the second bind fails and the collector exits at start."""
    by_port: dict[int, list[tuple[str, str]]] = {}
    for what, address in listeners(c.config):
        port = port_of(address)
        if port is not None:
            by_port.setdefault(port, []).append((what, address))
    for port, users in sorted(by_port.items()):
        for i, (what, address) in enumerate(users):
            for other, other_address in users[i + 1:]:
                if _overlap(address, other_address):
                    m.add(c.file, f"{what} ({address}) and {other} ({other_address}) listen on the same port {port}: "
                                  f"the collector cannot bind both and exits at start (\"bind: address already in "
                                  f"use\")")


_WILDCARDS = {"", "0.0.0.0", "[::]", "::"}


def _overlap(one: str, other: str) -> bool:
    """Same port: a clash unless both bind distinct specific hosts (a wildcard covers every host)."""
    hosts = [address.rpartition(":")[0] for address in (one, other)]
    return hosts[0] == hosts[1] or any(host in _WILDCARDS for host in hosts)


# --- root sampling ----------------------------------------------------------------------------------------------------

# the share of ROOT spans (no parent) each sampler type records; None: decided elsewhere (remote), not judged
_ROOT_SHARE: dict[str, float | None] = {
    "always_on": 1.0, "parentbased_always_on": 1.0, "always_off": 0.0, "parentbased_always_off": 0.0,
    "jaeger_remote": None, "parentbased_jaeger_remote": None, "xray": None,
}


def root_share(sampler: dict[str, Any]) -> float | None:
    kind = str(sampler.get("type") or "parentbased_always_on")
    if kind in ("traceidratio", "parentbased_traceidratio"):
        try:
            return float(str(sampler.get("argument", "1.0")))
        except ValueError:
            return None  # resources.check_instrumentation reports it
    return _ROOT_SHARE.get(kind)


def not_behind_kong(m: Manifests, kong: dict[str, Any], apps: list[str]) -> list[str]:
    """The apps (``Kind/name``) no Kong service routes to: no Service that is a kong.yaml upstream selects their
    pods."""
    upstreams = set()
    for service in kong.get("services") or []:
        host = url_parts(service.get("url"))[0].split(".")
        if len(host) >= 2:
            upstreams.add((host[1], host[0]))
    behind: set[str] = set()
    for doc, template in pod_templates(m):
        labels = (template.get("metadata") or {}).get("labels") or {}
        for service in m.objects("Service"):
            selector = (service.body.get("spec") or {}).get("selector") or {}
            if (service.namespace, service.name) in upstreams and service.namespace == doc.namespace and selector \
                    and all(labels.get(k) == v for k, v in selector.items()):
                behind.add(f"{doc.kind}/{doc.name}")
    return [app for app in apps if app not in behind]


def check_root_sampling(m: Manifests, kong: dict[str, Any]) -> None:
    """Kong decides which requests are traced; an injected app that Kong does not front starts traces itself (its
    callers' requests, e.g. the demo frontend's GET /products), and Kong follows a not-sampled parent (Kong/kong@3.9.1
    kong/pdk/tracing.lua:614-617). A sampler that drops root spans there drops those traces whole, Kong's part too."""
    for doc in m.objects("Instrumentation"):
        spec = doc.body.get("spec") or {}
        share = root_share(spec.get("sampler") or {})
        if share is None or share >= 1.0:
            continue
        apps = sorted(a for found in injecting_apps(m, doc.namespace, doc.name).values() for a in found)
        if entry := not_behind_kong(m, kong, apps):
            sampler = spec.get("sampler") or {}
            named = f"{sampler.get('type')}" + (f" {sampler.get('argument')}" if "ratio" in str(sampler.get("type"))
                                                 else "")
            m.add(doc.file, f"Instrumentation/{doc.name}: sampler {named} records {share:.0%} of root spans, but "
                            f"{', '.join(entry)} receive requests that do not pass Kong (no kong/kong.yaml service "
                            f"routes to them), so traces start there: {1 - share:.0%} of those are dropped whole, "
                            f"with Kong's spans where they reach Kong later (Kong follows a not-sampled parent, "
                            f"Kong/kong@3.9.1 kong/pdk/tracing.lua:614-617), and Kong's sampling rate no longer "
                            f"decides; sample every root span")
