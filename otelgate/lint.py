"""``otelgate lint manifests/``: static checks of everything the kind and external stacks apply.

1. every YAML file parses;
2. built-in Kubernetes kinds validate against the offline schemas of kubernetes-validate (strict: unknown fields
   are errors), at the kind node's Kubernetes version;
3. the custom resources carry what the OpenTelemetry Operator needs (collector: mode, pinned image, a config whose
   pipelines name defined components, receivers bound to 0.0.0.0; Instrumentation: endpoint, propagators, sampler);
4. the cross-references hold — each mismatch is ONE line naming both sides:
   the collector Service DNS name and ports used by Kong's plugins, the Instrumentation and the app = the collector
   resource's name, namespace and receivers; tcp-log port = the tcp_log receiver's; the scrape config's pod
   selector and port select Kong's pods (labels from the chart's conventions + values) on the Status API; the
   frontend's ``*_SERVICE_HOST`` reach the right service through a Kong route; the exporter's endpoint (Secret) is
   the sink Service; RBAC exists for the collector's ServiceAccount; kind's port mappings match the NodePorts;
   images are pinned.

Also here: finding or building decK (``deck file validate``), see :func:`find_deck`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from otelgate.stacks.kind_addons import TOKEN_PLACEHOLDER, TOPOLOGY, Topology

KUBERNETES_VERSION = "1.36.0"   # kind v0.32.0's node image (manifests/kind/cluster.yaml)
CUSTOM_GROUPS = ("opentelemetry.io/", "kind.x-k8s.io/")
SINK_INGEST_PATH = "/api/v2/otlp"   # the sink's dynatrace profile

FRONTEND = "frontend"   # the demo app's workload that calls the services through Kong
# What the demo frontend (odigos simple-demo, GET /products) calls on each service: "http://" + HOST + path.
FRONTEND_CALLS: dict[str, tuple[str, ...]] = {
    "INVENTORY_SERVICE_HOST": ("/inventory",),
    "PRICING_SERVICE_HOST": ("/price?id=1",),
    "COUPON_SERVICE_HOST": ("/coupons",),
}
# Paths each demo service serves (simple-demo v0.1.39), to check what arrives after Kong's strip_path.
SERVICE_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "coupon": ("/coupons", "/apply-coupon", "/healthz"),
    "inventory": ("/inventory", "/buy"),
    "pricing": ("/price",),
    "membership": ("/isMember",),
}
INJECT_PREFIX = "instrumentation.opentelemetry.io/inject-"
GO_TARGET_EXE = "instrumentation.opentelemetry.io/otel-go-auto-target-exe"
SAMPLERS = {"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio", "jaeger_remote", "parentbased_jaeger_remote", "xray"}
PROPAGATORS = {"tracecontext", "baggage", "b3", "b3multi", "jaeger", "xray", "ottrace", "none"}


@dataclass(frozen=True)
class Finding:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class Doc:
    file: str        # relative to the manifests root's parent (e.g. manifests/kong/kong.yaml)
    index: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str((self.body.get("metadata") or {}).get("namespace") or "default")


@dataclass
class Manifests:
    root: Path
    docs: list[Doc] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root.parent).as_posix()

    def objects(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d.kind == kind and "apiVersion" in d.body]

    def file_doc(self, relative: str) -> dict[str, Any] | None:
        """The single document of a non-Kubernetes file (Helm values, decK config), by path under the root."""
        wanted = (self.root / relative).resolve()
        for doc in self.docs:
            if (self.root.parent / doc.file).resolve() == wanted:
                return doc.body
        return None

    def add(self, file: str, message: str) -> None:
        self.findings.append(Finding(file, message))


# --- loading --------------------------------------------------------------------------------------------------------


def load(root: Path) -> Manifests:
    m = Manifests(root=root.resolve())
    for path in sorted([*m.root.rglob("*.yaml"), *m.root.rglob("*.yml")]):
        try:
            bodies = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            m.add(m.rel(path), f"does not parse as YAML{where}: {getattr(exc, 'problem', exc)}")
            continue
        for index, body in enumerate(bodies):
            if body is None:
                continue
            if not isinstance(body, dict):
                m.add(m.rel(path), f"document {index + 1} is a {type(body).__name__}, not a mapping")
                continue
            m.docs.append(Doc(m.rel(path), index, body))
    return m


# --- 2. schemas -----------------------------------------------------------------------------------------------------


def check_schemas(m: Manifests, kubernetes_version: str = KUBERNETES_VERSION) -> None:
    import kubernetes_validate

    for doc in m.docs:
        api = str(doc.body.get("apiVersion", ""))
        if not api or not doc.kind or api.startswith(CUSTOM_GROUPS):
            continue
        try:
            kubernetes_validate.validate(doc.body, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(root)"
            m.add(doc.file, f"{doc.kind}/{doc.name}: {path}: {exc.message} (Kubernetes {kubernetes_version} schema)")
        except kubernetes_validate.SchemaNotFoundError:
            m.add(doc.file, f"{doc.kind}/{doc.name}: no Kubernetes {kubernetes_version} schema for {api} {doc.kind}")


# --- helpers --------------------------------------------------------------------------------------------------------


def _port_of(address: Any) -> int | None:
    match = re.search(r":(\d+)$", str(address or ""))
    return int(match.group(1)) if match else None


def _url(text: Any) -> tuple[str, int | None, str]:
    """(host, port, path) of a URL or of ``host[:port][/path]`` (the frontend's form without a scheme)."""
    raw = str(text or "")
    parts = urlsplit(raw if "://" in raw else f"http://{raw}")
    port = parts.port if parts.port is not None else (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port, parts.path or ""


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e.get("name"): e for e in container.get("env") or []}


def _pod_templates(m: Manifests) -> Iterator[tuple[Doc, dict[str, Any]]]:
    for doc in m.docs:
        if doc.kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc, ((doc.body.get("spec") or {}).get("template") or {})


@dataclass(frozen=True)
class CollectorFacts:
    file: str
    name: str
    namespace: str
    service_dns: str
    otlp_http: int | None
    otlp_grpc: int | None
    tcp_log: int | None
    config: dict[str, Any]
    spec: dict[str, Any]


def _receiver(config: dict[str, Any], type_names: tuple[str, ...]) -> dict[str, Any] | None:
    for key, value in (config.get("receivers") or {}).items():
        if str(key).split("/", 1)[0] in type_names:
            return value if isinstance(value, dict) else {}
    return None


def collector_facts(m: Manifests) -> CollectorFacts | None:
    crs = m.objects("OpenTelemetryCollector")
    if len(crs) != 1:
        m.add("manifests/otel", f"expected exactly one OpenTelemetryCollector resource, found {len(crs)}")
        return None
    doc = crs[0]
    spec = doc.body.get("spec") or {}
    config = spec.get("config") or {}
    if isinstance(config, str):
        config = yaml.safe_load(config) or {}
    otlp = _receiver(config, ("otlp",)) or {}
    protocols = otlp.get("protocols") or {}
    tcp = _receiver(config, ("tcp_log", "tcplog")) or {}
    return CollectorFacts(
        file=doc.file, name=doc.name, namespace=doc.namespace,
        service_dns=f"{doc.name}-collector.{doc.namespace}.svc.cluster.local",
        otlp_http=_port_of((protocols.get("http") or {}).get("endpoint")) if "http" in protocols else None,
        otlp_grpc=_port_of((protocols.get("grpc") or {}).get("endpoint")) if "grpc" in protocols else None,
        tcp_log=_port_of(tcp.get("listen_address")), config=config, spec=spec)


# --- 3. custom resources --------------------------------------------------------------------------------------------


def _image_pinned(image: Any) -> str | None:
    text = str(image or "")
    if not text:
        return "has no image"
    if "@sha256:" in text:
        return None
    tag = text.rsplit("/", 1)[-1].partition(":")[2]
    if not tag:
        return f"image {text} has no tag (floats on :latest)"
    if tag == "latest":
        return f"image {text} is not pinned (:latest)"
    return None


def check_collector_resource(m: Manifests, c: CollectorFacts) -> None:
    doc = next(d for d in m.objects("OpenTelemetryCollector"))
    api = str(doc.body.get("apiVersion"))
    if api != "opentelemetry.io/v1beta1":
        m.add(c.file, f"OpenTelemetryCollector/{c.name}: apiVersion {api}; the Operator 0.158 stores v1beta1 "
                      f"(spec.config as structured YAML)")
    mode = c.spec.get("mode", "deployment")
    if mode not in ("deployment", "daemonset", "statefulset", "sidecar"):
        m.add(c.file, f"OpenTelemetryCollector/{c.name}: spec.mode {mode!r} is not one the Operator knows")
    if problem := _image_pinned(c.spec.get("image")):
        m.add(c.file, f"OpenTelemetryCollector/{c.name}: spec.image {problem}")
    elif "contrib" not in str(c.spec.get("image")) and _receiver(c.config, ("tcp_log", "tcplog")) is not None:
        m.add(c.file, f"OpenTelemetryCollector/{c.name}: spec.image {c.spec.get('image')} is not the contrib "
                      f"distribution, which the tcp_log receiver needs")
    pipelines = ((c.config.get("service") or {}).get("pipelines")) or {}
    if not pipelines:
        m.add(c.file, f"OpenTelemetryCollector/{c.name}: spec.config.service.pipelines is empty")
    for pipeline_name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            defined = c.config.get(kind) or {}
            for component in (pipeline or {}).get(kind) or []:
                if component not in defined:
                    m.add(c.file, f"pipeline {pipeline_name} uses {kind[:-1]} {component!r}, which "
                                  f"spec.config.{kind} does not define")
    for label, port in (("otlp http", c.otlp_http), ("otlp grpc", c.otlp_grpc)):
        if port is None:
            m.add(c.file, f"the otlp receiver has no {label} endpoint with a port")
    otlp = _receiver(c.config, ("otlp",)) or {}
    for protocol, settings in (otlp.get("protocols") or {}).items():
        endpoint = str((settings or {}).get("endpoint", "localhost"))
        if not endpoint.startswith(("0.0.0.0:", "[::]:", ":")):
            m.add(c.file, f"otlp {protocol} receiver listens on {endpoint!r}; in a pod it must bind 0.0.0.0 or no "
                          f"other pod reaches it")
    if _receiver(c.config, ("tcp_log", "tcplog")) is not None and c.tcp_log is None:
        m.add(c.file, "the tcp_log receiver has no listen_address port")


def check_instrumentation(m: Manifests) -> None:
    for doc in m.objects("Instrumentation"):
        spec = doc.body.get("spec") or {}
        where = f"Instrumentation/{doc.name}"
        if str(doc.body.get("apiVersion")) != "opentelemetry.io/v1alpha1":
            m.add(doc.file, f"{where}: apiVersion {doc.body.get('apiVersion')}; the Operator serves only v1alpha1")
        if not (spec.get("exporter") or {}).get("endpoint"):
            m.add(doc.file, f"{where}: spec.exporter.endpoint is missing")
        propagators = list(spec.get("propagators") or [])
        if unknown := [p for p in propagators if p not in PROPAGATORS]:
            m.add(doc.file, f"{where}: unknown propagators {unknown}")
        for needed in ("tracecontext", "baggage"):
            if needed not in propagators:
                m.add(doc.file, f"{where}: propagators {propagators} lack {needed} (W3C, what Kong injects)")
        sampler = spec.get("sampler") or {}
        if sampler.get("type") not in SAMPLERS:
            m.add(doc.file, f"{where}: sampler.type {sampler.get('type')!r} is not one of the Operator's samplers")
        if "ratio" in str(sampler.get("type")):
            try:
                if not 0.0 <= float(str(sampler.get("argument"))) <= 1.0:
                    raise ValueError
            except (TypeError, ValueError):
                m.add(doc.file, f"{where}: sampler.argument {sampler.get('argument')!r} must be a string ratio "
                                f"in [0, 1]")


def check_images(m: Manifests) -> None:
    for doc, template in _pod_templates(m):
        spec = template.get("spec") or {}
        for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            if problem := _image_pinned(container.get("image")):
                m.add(doc.file, f"{doc.kind}/{doc.name} container {container.get('name')}: {problem}")
    for relative in ("otel/operator-values.yaml", "kong/values.yaml"):
        values = m.file_doc(relative) or {}
        for path, image in _values_images(values):
            if problem := _image_pinned(image):
                m.add(f"manifests/{relative}", f"{path}: {problem}")
    cluster = m.file_doc("kind/cluster.yaml") or {}
    for node in cluster.get("nodes") or []:
        if "@sha256:" not in str(node.get("image", "")):
            m.add("manifests/kind/cluster.yaml", f"node image {node.get('image')!r} is not pinned by digest")


def _values_images(values: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Helm-style {repository, tag} pairs in a values file (an empty tag means the chart's appVersion: pinned)."""
    if not isinstance(values, dict):
        return
    if "repository" in values and "tag" in values and values.get("repository"):
        tag = str(values.get("tag") or "")
        if tag:
            yield path, f"{values['repository']}:{tag}"
    for key, value in values.items():
        yield from _values_images(value, f"{path}.{key}" if path else str(key))


# --- 4. cross-references --------------------------------------------------------------------------------------------


def check_kong_plugins(m: Manifests, c: CollectorFacts, kong: dict[str, Any]) -> None:
    file = "manifests/kong/kong.yaml"
    plugins = {p.get("name"): (p.get("config") or {}) for p in kong.get("plugins") or [] if isinstance(p, dict)}
    otel = plugins.get("opentelemetry")
    if otel is None:
        m.add(file, "no opentelemetry plugin: Kong would send no traces")
    else:
        for key in ("traces_endpoint", "logs_endpoint", "endpoint"):
            if key in otel:
                _check_otlp_http_url(m, file, f"opentelemetry {key}", otel[key], c,
                                     {"traces_endpoint": "/v1/traces", "logs_endpoint": "/v1/logs",
                                      "endpoint": "/v1/traces"}[key])
    tcp = plugins.get("tcp-log")
    if tcp is None:
        m.add(file, "no tcp-log plugin: Kong would send no access logs")
    else:
        if tcp.get("host") != c.service_dns:
            m.add(file, f"tcp-log host {tcp.get('host')!r} is not the collector Service {c.service_dns!r} "
                        f"({c.file}: {c.name} in {c.namespace})")
        if c.tcp_log is not None and str(tcp.get("port")) != str(c.tcp_log):
            m.add(file, f"tcp-log port {tcp.get('port')} != the collector's tcp_log receiver port {c.tcp_log} "
                        f"({c.file})")
    if "prometheus" not in plugins:
        m.add(file, "no prometheus plugin: Kong's Status API /metrics would have no kong_* metrics")


def _check_otlp_http_url(m: Manifests, file: str, what: str, url: Any, c: CollectorFacts, path: str | None) -> None:
    host, port, url_path = _url(url)
    if host != c.service_dns:
        m.add(file, f"{what} host {host!r} is not the collector Service {c.service_dns!r} "
                    f"({c.file}: {c.name} in {c.namespace})")
    elif port != c.otlp_http:
        m.add(file, f"{what} port {port} != the collector's otlp http receiver port {c.otlp_http} ({c.file})")
    elif path is not None and url_path != path:
        m.add(file, f"{what} path {url_path!r} should be {path!r} (OTLP/HTTP)")


def check_instrumentation_endpoints(m: Manifests, c: CollectorFacts) -> None:
    for doc in m.objects("Instrumentation"):
        spec = doc.body.get("spec") or {}
        endpoint = (spec.get("exporter") or {}).get("endpoint")
        if endpoint:
            _check_otlp_http_url(m, doc.file, f"Instrumentation/{doc.name} exporter.endpoint", endpoint, c, None)
        for language in ("python", "nodejs", "java", "dotnet", "go", "apacheHttpd", "nginx"):
            for env in (spec.get(language) or {}).get("env") or []:
                if env.get("name") == "OTEL_EXPORTER_OTLP_ENDPOINT":
                    _check_otlp_http_url(m, doc.file, f"Instrumentation/{doc.name} {language} "
                                                      f"OTEL_EXPORTER_OTLP_ENDPOINT", env.get("value"), c, None)
    for doc, template in _pod_templates(m):
        for container in (template.get("spec") or {}).get("containers") or []:
            for name, env in _env(container).items():
                value = str(env.get("value") or "")
                if "-collector." in value or name == "OTEL_EXPORTER_OTLP_ENDPOINT":
                    _check_otlp_http_url(m, doc.file, f"{doc.kind}/{doc.name} env {name}", value, c, None)


def check_injection(m: Manifests) -> None:
    instrumentations = {(d.namespace, d.name) for d in m.objects("Instrumentation")}
    for doc, template in _pod_templates(m):
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        for key, value in annotations.items():
            if not key.startswith(INJECT_PREFIX) or str(value) == "false":
                continue
            value = str(value)
            if value == "true":
                count = sum(1 for ns, _ in instrumentations if ns == doc.namespace)
                if count != 1:
                    m.add(doc.file, f"{doc.kind}/{doc.name}: {key}: \"true\" needs exactly one Instrumentation in "
                                    f"namespace {doc.namespace}; the manifests have {count}")
            else:
                ns, _, name = value.rpartition("/")
                if (ns or doc.namespace, name) not in instrumentations:
                    m.add(doc.file, f"{doc.kind}/{doc.name}: {key}: {value!r} names no Instrumentation in the "
                                    f"manifests (have {sorted('/'.join(i) for i in instrumentations)})")
            if key == INJECT_PREFIX + "go" and GO_TARGET_EXE not in annotations:
                m.add(doc.file, f"{doc.kind}/{doc.name}: Go injection needs the {GO_TARGET_EXE} annotation "
                                f"(else the Operator skips it)")


def check_rbac(m: Manifests, c: CollectorFacts, topology: Topology) -> None:
    account = c.spec.get("serviceAccount")
    if not account:
        m.add(c.file, f"OpenTelemetryCollector/{c.name} sets no spec.serviceAccount: the Operator's default account "
                      f"has no RBAC for the prometheus receiver's pod discovery")
        return
    if not any(d.name == account and d.namespace == c.namespace for d in m.objects("ServiceAccount")):
        m.add(c.file, f"spec.serviceAccount {account!r} has no ServiceAccount in namespace {c.namespace} "
                      f"(manifests/otel/rbac.yaml)")
    roles = {(d.kind, d.namespace if d.kind == "Role" else "", d.name): d for d in
             m.objects("ClusterRole") + m.objects("Role")}
    granted_in: set[str] = set()
    for binding in m.objects("ClusterRoleBinding") + m.objects("RoleBinding"):
        subjects = binding.body.get("subjects") or []
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                   and s.get("namespace", binding.namespace) == c.namespace for s in subjects):
            continue
        ref = binding.body.get("roleRef") or {}
        key = (str(ref.get("kind")), binding.namespace if ref.get("kind") == "Role" else "", str(ref.get("name")))
        role = roles.get(key)
        if role is None:
            m.add(binding.file, f"{binding.kind}/{binding.name} refers to {ref.get('kind')} {ref.get('name')!r}, "
                                f"which the manifests do not define")
            continue
        if _grants_pod_discovery(role.body):
            granted_in.add("*" if binding.kind == "ClusterRoleBinding" else binding.namespace)
    if not granted_in:
        m.add(c.file, f"ServiceAccount {c.namespace}/{account} is bound to no role granting get/list/watch on pods "
                      f"(the prometheus receiver's kubernetes_sd_configs need it)")
    elif "*" not in granted_in and topology.kong_namespace not in granted_in:
        m.add(c.file, f"ServiceAccount {c.namespace}/{account} may discover pods only in {sorted(granted_in)}, not in "
                      f"Kong's namespace {topology.kong_namespace!r}")


def _grants_pod_discovery(role: dict[str, Any]) -> bool:
    for rule in role.get("rules") or []:
        groups, resources, verbs = (set(rule.get(k) or []) for k in ("apiGroups", "resources", "verbs"))
        if ("" in groups or "*" in groups) and ({"pods", "*"} & resources) and (
                {"get", "list", "watch"} <= verbs or "*" in verbs):
            return True
    return False


def check_scrape_config(m: Manifests, c: CollectorFacts, topology: Topology) -> None:
    prometheus = _receiver(c.config, ("prometheus",))
    if prometheus is None:
        m.add(c.file, "no prometheus receiver: nothing scrapes Kong's Status API")
        return
    values = m.file_doc("kong/values.yaml") or {}
    status = values.get("status") or {}
    status_http = status.get("http") or {}
    if status.get("enabled") is False or status_http.get("enabled") is False:
        m.add("manifests/kong/values.yaml", "status.http is disabled: the Status API (/metrics) would not listen")
    status_port = int(status_http.get("containerPort", 8100))
    env = values.get("env") or {}
    labels = topology.kong_pod_labels(values)
    target = {f"__meta_kubernetes_pod_label_{_label_name(k)}": v for k, v in labels.items()}
    target |= {f"__meta_kubernetes_pod_labelpresent_{_label_name(k)}": "true" for k in labels}
    target |= {"__meta_kubernetes_namespace": topology.kong_namespace,
               "__meta_kubernetes_pod_container_port_number": str(status_port),
               "__meta_kubernetes_pod_container_port_name": "status",
               "__meta_kubernetes_pod_container_name": "proxy",
               "__meta_kubernetes_pod_ready": "true", "__meta_kubernetes_pod_phase": "Running",
               "__address__": f"10.0.0.1:{status_port}", "__metrics_path__": "/metrics", "__scheme__": "http"}
    jobs = ((prometheus.get("config") or {}).get("scrape_configs")) or []
    kong_jobs = [job for job in jobs if any(sd.get("role") == "pod" for sd in job.get("kubernetes_sd_configs") or [])]
    if not kong_jobs:
        m.add(c.file, "the prometheus receiver has no scrape job with kubernetes_sd_configs role pod (Kong's pods)")
        return
    for job in kong_jobs:
        name = job.get("job_name", "?")
        namespaces = [ns for sd in job.get("kubernetes_sd_configs") or []
                      for ns in ((sd.get("namespaces") or {}).get("names") or [])]
        if namespaces and topology.kong_namespace not in namespaces:
            m.add(c.file, f"scrape job {name}: namespaces {namespaces} do not include Kong's namespace "
                          f"{topology.kong_namespace!r}")
            continue
        outcome = _relabel(job.get("relabel_configs") or [], dict(target))
        if outcome is None:
            m.add(c.file, f"scrape job {name}: its relabel rules drop Kong's pod (labels {labels}, Status API port "
                          f"{status_port} named status); it would scrape nothing")
            continue
        path = job.get("metrics_path", outcome.get("__metrics_path__", "/metrics"))
        if path != "/metrics":
            m.add(c.file, f"scrape job {name}: metrics_path {path!r}; Kong's Status API serves /metrics")
        port = _port_of(outcome.get("__address__"))
        if port != status_port:
            m.add(c.file, f"scrape job {name}: scrapes port {port}, but Kong's Status API listens on {status_port} "
                          f"(manifests/kong/values.yaml status.http.containerPort)")
    if str(env.get("database")) != "off":
        m.add("manifests/kong/values.yaml", f"env.database is {env.get('database')!r}; DB-less needs \"off\"")


def _label_name(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus relabeling (keep, drop, replace; the subset a pod-discovery job uses). None = target dropped."""
    for rule in rules:
        action = str(rule.get("action", "replace")).lower()
        separator = str(rule.get("separator", ";"))
        value = separator.join(labels.get(str(s), "") for s in rule.get("source_labels") or [])
        pattern = str(rule.get("regex", "(.*)")).replace("$$", "$")
        try:
            match = re.fullmatch(pattern, value)
        except re.error:
            return labels  # an invalid regex is the collector's validate's business; do not guess here
        if action == "keep" and match is None:
            return None
        if action == "drop" and match is not None:
            return None
        if action == "replace" and match is not None and rule.get("target_label"):
            replacement = str(rule.get("replacement", "$1")).replace("$$", "$")
            labels[str(rule["target_label"])] = _expand(replacement, match)
    return labels


def _expand(replacement: str, match: re.Match[str]) -> str:
    return re.sub(r"\$\{?(\d+)\}?", lambda group: match.group(int(group.group(1))) or "", replacement)


def check_kong_services(m: Manifests, kong: dict[str, Any]) -> None:
    services = {(d.namespace, d.name): d for d in m.objects("Service")}
    for service in kong.get("services") or []:
        host, port, _ = _url(service.get("url"))
        match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local", host)
        if not match:
            m.add("manifests/kong/kong.yaml", f"service {service.get('name')}: upstream host {host!r} is not a "
                                              f"cluster Service DNS name")
            continue
        target = services.get((match.group(2), match.group(1)))
        if target is None:
            m.add("manifests/kong/kong.yaml", f"service {service.get('name')}: upstream {host} names no Service in "
                                              f"the manifests")
        elif port not in [p.get("port") for p in (target.body.get("spec") or {}).get("ports") or []]:
            m.add("manifests/kong/kong.yaml", f"service {service.get('name')}: upstream port {port} is not a port of "
                                              f"Service {target.namespace}/{target.name} ({target.file})")


def _kong_route_for(kong: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any], str] | None:
    """Kong's (traditional) prefix routing: the longest matching route path wins."""
    best: tuple[dict[str, Any], dict[str, Any], str] | None = None
    for service in kong.get("services") or []:
        for route in service.get("routes") or []:
            for prefix in route.get("paths") or []:
                if path.startswith(prefix) and (best is None or len(prefix) > len(best[2])):
                    best = (service, route, prefix)
    return best


def check_frontend(m: Manifests, kong: dict[str, Any], topology: Topology) -> None:
    values = m.file_doc("kong/values.yaml") or {}
    proxy = values.get("proxy") or {}
    proxy_port = int((proxy.get("http") or {}).get("servicePort", 80))
    proxy_dns = f"{topology.kong_proxy_service}.{topology.kong_namespace}.svc.cluster.local"
    kong_services = {s.get("name") for s in kong.get("services") or []}
    for doc, template in _pod_templates(m):
        if doc.name != FRONTEND:
            continue
        for container in (template.get("spec") or {}).get("containers") or []:
            env = _env(container)
            for variable, calls in FRONTEND_CALLS.items():
                if variable not in env:
                    continue
                service = variable.removesuffix("_SERVICE_HOST").lower()
                host, port, prefix = _url(env[variable].get("value"))
                where = f"{doc.kind}/{doc.name} env {variable}={env[variable].get('value')!r}"
                if host != proxy_dns:
                    if service in kong_services:
                        m.add(doc.file, f"{where} bypasses Kong; it should be {proxy_dns}:{proxy_port}<route path>")
                    continue
                if port != proxy_port:
                    m.add(doc.file, f"{where}: port {port} is not Kong's proxy Service port {proxy_port}")
                    continue
                for call in calls:
                    _check_frontend_call(m, doc.file, where, kong, prefix + call, service)


def _check_frontend_call(m: Manifests, file: str, where: str, kong: dict[str, Any], request: str,
                         service: str) -> None:
    path = request.split("?", 1)[0]
    found = _kong_route_for(kong, path)
    if found is None:
        m.add(file, f"{where}: the frontend's request {path} matches no route in manifests/kong/kong.yaml")
        return
    kong_service, route, prefix = found
    if kong_service.get("name") != service:
        m.add(file, f"{where}: {path} is routed by {route.get('name')} to service {kong_service.get('name')!r}, "
                    f"not {service!r}")
        return
    upstream = path[len(prefix):] if route.get("strip_path", True) else path
    base = _url(kong_service.get("url"))[2].rstrip("/")
    upstream = base + ("/" + upstream.lstrip("/") if upstream else "/")
    if upstream not in SERVICE_ENDPOINTS.get(service, (upstream,)):
        m.add(file, f"{where}: Kong forwards {path} to {service} as {upstream}, which {service} does not serve "
                    f"(it serves {list(SERVICE_ENDPOINTS[service])}; check strip_path)")


def check_exporter_secret(m: Manifests, c: CollectorFacts, topology: Topology) -> None:
    env = {e.get("name"): e for e in c.spec.get("env") or []}
    sink_services = [d for d in m.objects("Service") if d.name == topology.sink_name]
    for variable, purpose in (("DT_ENDPOINT", "endpoint"), ("DT_API_TOKEN", "token")):
        ref = ((env.get(variable) or {}).get("valueFrom") or {}).get("secretKeyRef")
        if variable not in env:
            m.add(c.file, f"spec.env has no {variable} (the exporter's {purpose})")
            continue
        if not ref:
            if variable == "DT_API_TOKEN":
                m.add(c.file, "spec.env DT_API_TOKEN is not read from a Secret (a literal token in a manifest)")
            continue
        secret = next((d for d in m.objects("Secret") if d.name == ref.get("name") and d.namespace == c.namespace),
                      None)
        if secret is None:
            m.add(c.file, f"spec.env {variable} reads Secret {c.namespace}/{ref.get('name')}, which the manifests do "
                          f"not define")
            continue
        data = secret.body.get("stringData") or {}
        if ref.get("key") not in data:
            m.add(secret.file, f"Secret/{secret.name} has no key {ref.get('key')!r} (read by {c.file} {variable})")
            continue
        value = str(data[ref.get("key")])
        if variable == "DT_API_TOKEN" and value != TOKEN_PLACEHOLDER:
            m.add(secret.file, f"Secret/{secret.name} key {ref.get('key')} holds a literal value; keep the "
                               f"{TOKEN_PLACEHOLDER} placeholder (otelgate fills it in, never commits a token)")
        if variable == "DT_ENDPOINT":
            _check_sink_endpoint(m, secret, value, sink_services, topology)
    for secret in m.objects("Secret"):
        for key, value in (secret.body.get("stringData") or {}).items():
            if "token" in str(key).lower() and str(value) != TOKEN_PLACEHOLDER:
                m.add(secret.file, f"Secret/{secret.name} key {key} holds a literal token; keep {TOKEN_PLACEHOLDER}")


def _check_sink_endpoint(m: Manifests, secret: Doc, value: str, sink_services: list[Doc],
                         topology: Topology) -> None:
    host, port, path = _url(value)
    sink_dns = f"{topology.sink_name}.{topology.sink_namespace}.svc.cluster.local"
    if not sink_services:
        m.add(secret.file, f"no Service {topology.sink_name} in the manifests for the exporter endpoint {value}")
        return
    ports = [p.get("port") for p in (sink_services[0].body.get("spec") or {}).get("ports") or []]
    if host != sink_dns:
        m.add(secret.file, f"Secret/{secret.name} endpoint host {host!r} is not the sink Service {sink_dns!r}")
    elif port not in ports:
        m.add(secret.file, f"Secret/{secret.name} endpoint port {port} is not a port of Service "
                           f"{topology.sink_name} {ports} ({sink_services[0].file})")
    elif path.rstrip("/") != SINK_INGEST_PATH:
        m.add(secret.file, f"Secret/{secret.name} endpoint path {path!r} should be {SINK_INGEST_PATH} (the sink's "
                           f"Dynatrace profile; the exporter appends /v1/<signal>)")


def check_kind_ports(m: Manifests, topology: Topology) -> None:
    cluster = m.file_doc("kind/cluster.yaml")
    if cluster is None:
        m.add("manifests/kind", "no kind/cluster.yaml")
        return
    mapped = {int(p.get("containerPort")): p for node in cluster.get("nodes") or []
              for p in node.get("extraPortMappings") or []}
    for p in mapped.values():
        if p.get("listenAddress") != "127.0.0.1":
            m.add("manifests/kind/cluster.yaml", f"port mapping {p.get('containerPort')} listens on "
                                                 f"{p.get('listenAddress', '0.0.0.0')}; bind 127.0.0.1")
    values = m.file_doc("kong/values.yaml") or {}
    proxy = values.get("proxy") or {}
    node_port = (proxy.get("http") or {}).get("nodePort")
    if proxy.get("type") != "NodePort" or node_port is None:
        m.add("manifests/kong/values.yaml", "proxy is not a NodePort Service with proxy.http.nodePort set; the host "
                                            "cannot reach Kong through kind's port mapping")
    elif int(node_port) not in mapped:
        m.add("manifests/kong/values.yaml", f"proxy.http.nodePort {node_port} has no extraPortMappings entry in "
                                            f"manifests/kind/cluster.yaml (mapped: {sorted(mapped)})")
    for service in m.objects("Service"):
        if service.name != topology.sink_name:
            continue
        for port in (service.body.get("spec") or {}).get("ports") or []:
            if port.get("nodePort") is not None and int(port["nodePort"]) not in mapped:
                m.add(service.file, f"Service/{service.name} nodePort {port['nodePort']} has no extraPortMappings "
                                    f"entry in manifests/kind/cluster.yaml (mapped: {sorted(mapped)})")


def check_kong_values(m: Manifests) -> None:
    values = m.file_doc("kong/values.yaml")
    file = "manifests/kong/values.yaml"
    if values is None:
        m.add(file, "missing")
        return
    if (values.get("ingressController") or {}).get("enabled", True):
        m.add(file, "ingressController.enabled must be false for a static DB-less config (chart default is true)")
    env = values.get("env") or {}
    if str(env.get("tracing_instrumentations")) != "all":
        m.add(file, f"env.tracing_instrumentations is {env.get('tracing_instrumentations')!r}; the suites expect all")
    if not isinstance(env.get("tracing_sampling_rate"), str):
        m.add(file, "env.tracing_sampling_rate must be a quoted string (the chart quotes env values)")
    dbless = values.get("dblessConfig") or {}
    if dbless.get("config") or dbless.get("configMap") or dbless.get("secret"):
        m.add(file, "dblessConfig is set in the values; otelgate passes kong.yaml with --set-file "
                    "dblessConfig.config (two sources make the chart fail)")


# --- entry points ---------------------------------------------------------------------------------------------------


def lint_manifests(root: str | Path = "manifests", *, topology: Topology = TOPOLOGY,
                   kubernetes_version: str = KUBERNETES_VERSION) -> list[Finding]:
    """Every finding for the manifests under ``root`` (empty = clean)."""
    m = load(Path(root))
    check_schemas(m, kubernetes_version)
    check_images(m)
    check_instrumentation(m)
    check_injection(m)
    check_kong_values(m)
    check_kind_ports(m, topology)
    kong = m.file_doc("kong/kong.yaml")
    if kong is None:
        m.add("manifests/kong", "no kong/kong.yaml")
    facts = collector_facts(m)
    if facts is not None:
        check_collector_resource(m, facts)
        check_rbac(m, facts, topology)
        check_scrape_config(m, facts, topology)
        check_instrumentation_endpoints(m, facts)
        check_exporter_secret(m, facts, topology)
        if kong is not None:
            check_kong_plugins(m, facts, kong)
    if kong is not None:
        check_kong_services(m, kong)
        check_frontend(m, kong, topology)
    return m.findings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default="manifests", type=Path, help="the manifests folder")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION,
                        help=f"schema version for built-in kinds (default {KUBERNETES_VERSION}, the kind node's)")
    parser.add_argument("--ensure-deck", action="store_true",
                        help="only find decK, or build it from the Go module proxy into the cache, and print its path")


def run(args: argparse.Namespace) -> int:
    if args.ensure_deck:
        try:
            print(f"decK: {find_deck(build_if_missing=True)}", flush=True)
        except DeckUnavailable as exc:
            print(f"error: {exc}", flush=True)
            return 1
        return 0
    if not args.path.is_dir():
        print(f"error: {args.path} is not a folder", flush=True)
        return 2
    findings = lint_manifests(args.path, kubernetes_version=args.kubernetes_version)
    for finding in findings:
        print(finding)
    files = len({p for p in args.path.rglob("*.y*ml")})
    print(f"otelgate lint: {files} files, {len(findings)} finding(s)")
    return 1 if findings else 0


# --- decK -----------------------------------------------------------------------------------------------------------

DECK_MODULE = "github.com/kong/deck"
DECK_VERSION = "v1.64.0"
# Module versions that override what decK's go.mod requires, per decK version. The Go module proxy that otelgate's
# machines reach refuses github.com/pb33f/doctor v0.0.72 (403 on .mod and .zip), which v1.64.0 needs through
# github.com/daveshanley/vacuum v0.29.2 (`deck file lint`). vacuum v0.29.7 with doctor v0.0.78 is the pair decK
# v1.65.1 ships with, and v1.65.1's lint code is the same as v1.64.0's. v1.65.1 itself cannot be used: it needs
# github.com/Kong/ai-deck-converter, which the proxy refuses as well; v1.62.1 needs go-kong v0.75.1 (zip refused), and
# the other releases tried (v1.63.0, v1.62.0, v1.61.0, v1.60.0, v1.59.1, v1.58.0, v1.57.3, v1.56.0, v1.50.0,
# v1.49.2, v1.45.0, v1.40.0, v1.39.6) are not served at all.
DECK_REQUIRE_OVERRIDES: dict[str, dict[str, str]] = {
    "v1.64.0": {"github.com/daveshanley/vacuum": "v0.29.7", "github.com/pb33f/doctor": "v0.0.78"},
}


class DeckUnavailable(RuntimeError):
    """decK could not be found or built; the message says why and how to provide it."""


def deck_build_name(version: str = DECK_VERSION) -> str:
    """The version plus any dependency overrides, e.g. ``v1.64.0+vacuum-v0.29.7+doctor-v0.0.78``."""
    overrides = DECK_REQUIRE_OVERRIDES.get(version, {})
    return "+".join([version, *(f"{module.rsplit('/', 1)[-1]}-{v}" for module, v in overrides.items())])


def deck_cache_dir(version: str = DECK_VERSION) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "otelgate" / "deck" / deck_build_name(version)


def find_deck(*, build_if_missing: bool = False, version: str = DECK_VERSION, timeout: float = 1500.0) -> Path:
    """``OTELGATE_DECK``, then the cache, then ``deck`` on PATH; else (optionally) build it from the Go module proxy.

    decK's go.mod has ``replace`` directives, so ``go install module@version`` refuses it; the build downloads the
    module with ``go mod download`` and runs ``go build`` inside a copy of it, which honours the replaces, after
    raising the module versions in :data:`DECK_REQUIRE_OVERRIDES` (ones the proxy refuses at decK's pins)."""
    explicit = os.environ.get("OTELGATE_DECK")
    if explicit:
        if not Path(explicit).is_file():
            raise DeckUnavailable(f"OTELGATE_DECK={explicit} is not a file")
        return Path(explicit)
    cached = deck_cache_dir(version) / "deck"
    if cached.is_file():
        return cached
    on_path = shutil.which("deck")
    if on_path:
        return Path(on_path)
    if not build_if_missing:
        raise DeckUnavailable("decK not found (OTELGATE_DECK, the cache, PATH); build it with "
                              "find_deck(build_if_missing=True) or install it: "
                              "https://docs.konghq.com/deck/latest/installation/")
    return build_deck(version, timeout=timeout)


def build_deck(version: str = DECK_VERSION, *, timeout: float = 1500.0) -> Path:
    """Build decK into the cache (one build at a time across processes: a file lock)."""
    import fcntl

    go = shutil.which("go")
    if go is None:
        raise DeckUnavailable("building decK needs Go (https://go.dev/dl/); or set OTELGATE_DECK to a deck binary")
    target = deck_cache_dir(version)
    target.mkdir(parents=True, exist_ok=True)
    with (target / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "deck").is_file():  # built by another process while this one waited
            return target / "deck"
        return _build_deck_locked(go, version, target, timeout)


def _progress(began: float, text: str) -> None:
    """A build takes minutes cold: say which phase it is in (stderr, so stdout stays the tool's answer)."""
    print(f"decK build [{time.monotonic() - began:6.1f} s] {text}", file=sys.stderr, flush=True)


def _build_deck_locked(go: str, version: str, target: Path, timeout: float) -> Path:
    import json

    began = time.monotonic()
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    _progress(began, f"downloading {DECK_MODULE}@{version} from the Go module proxy")
    download = subprocess.run([go, "mod", "download", "-json", f"{DECK_MODULE}@{version}"], capture_output=True,
                              text=True, timeout=timeout, env=env, check=False)
    if download.returncode != 0:
        try:
            reason = str(json.loads(download.stdout).get("Error", ""))
        except ValueError:
            reason = ""
        raise DeckUnavailable(f"the Go module proxy did not serve {DECK_MODULE}@{version}: "
                              f"{(reason or download.stderr or download.stdout).strip()[:400]}")
    source = Path(json.loads(download.stdout)["Dir"])
    with tempfile.TemporaryDirectory(prefix="otelgate-deck-") as tmp:
        work = Path(tmp) / "deck"
        shutil.copytree(source, work)
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
        overrides = DECK_REQUIRE_OVERRIDES.get(version, {})
        if overrides:
            edit = subprocess.run([go, "mod", "edit", *(f"-require={m}@{v}" for m, v in overrides.items())],
                                  cwd=work, capture_output=True, text=True, timeout=60, env=env, check=False)
            if edit.returncode != 0:
                raise DeckUnavailable(f"go mod edit of decK {version} failed: {edit.stderr.strip()[-800:]}")
        partial = target / "deck.partial"
        _progress(began, f"go build {deck_build_name(version)} (a few minutes on 2 cores when the caches are cold)")
        stamp = f"-X {DECK_MODULE}/cmd.VERSION={version} -X {DECK_MODULE}/cmd.COMMIT={deck_build_name(version)}"
        build = subprocess.run([go, "build", "-trimpath", "-ldflags", f"-s -w {stamp}", "-o", str(partial), "."],
                               cwd=work, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if build.returncode != 0:
            raise DeckUnavailable(f"go build of decK {deck_build_name(version)} failed (the lines that name a module "
                                  f"with 403 Forbidden are ones the Go module proxy refuses): "
                                  f"{build.stderr.strip()[-1500:]}")
        partial.replace(target / "deck")
    _progress(began, f"done: {target / 'deck'} ({(target / 'deck').stat().st_size / 1e6:.1f} MB)")
    return target / "deck"


def deck_file_validate(kong_yaml: str | Path, deck: Path | None = None,
                       timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``deck file validate <kong.yaml>``, offline. What decK checks there: YAML/JSON parsing; the file against its
    JSON schema of entity structure (unknown fields and wrong types on services, routes, plugins... are errors; a
    plugin's ``config`` is an open object, so plugin options such as ``traces_endpoint`` are NOT checked, and neither
    is ``_format_version``); then the in-memory state: references to entities that do not exist, duplicates.
    Analytics are off: decK otherwise sends a UDP report to Kong for every command."""
    binary = deck or find_deck()
    return subprocess.run([str(binary), "--analytics=false", "file", "validate", str(kong_yaml)],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "DECK_ANALYTICS": "off"})
