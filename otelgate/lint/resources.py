"""``otelgate lint`` checks 1-3: built-in kinds against Kubernetes' schemas, the custom resources against what the
Operator needs, pinned images, the injection annotations and Kong's Helm values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from otelgate.controlplane.crds import lint_custom_resource
from otelgate.lint.model import CollectorFacts, Manifests, pod_templates, receiver

KUBERNETES_VERSION = "1.36.0"   # kind v0.32.0's node image (manifests/kind/cluster.yaml)
CUSTOM_GROUPS = ("opentelemetry.io/", "kind.x-k8s.io/")
INJECT_PREFIX = "instrumentation.opentelemetry.io/inject-"
GO_TARGET_EXE = "instrumentation.opentelemetry.io/otel-go-auto-target-exe"
OPERATOR_GROUP = "opentelemetry.io/"


def check_schemas(m: Manifests, kubernetes_version: str = KUBERNETES_VERSION) -> None:
    for doc in m.docs:
        api = str(doc.body.get("apiVersion", ""))
        if api.startswith(OPERATOR_GROUP):  # the Operator's CRD schemas, at the pinned version (offline, cached)
            for problem in lint_custom_resource(doc.body):
                m.add(doc.file, problem)
            continue
        if not api or not doc.kind or api.startswith(CUSTOM_GROUPS):
            continue
        key = (kubernetes_version, json.dumps(doc.body, sort_keys=True, default=str))
        if key not in _SCHEMA_VERDICTS:
            _SCHEMA_VERDICTS[key] = _schema_problem(doc.body, kubernetes_version)
        if verdict := _SCHEMA_VERDICTS[key]:
            m.add(doc.file, f"{doc.kind}/{doc.name}: {verdict}")


# (version, document) -> problem or None: kubernetes_validate re-reads its JSON schemas on every call (~0.15 s a
# document), and a process that lints many variants of one folder (otelgate mutate, tests) repeats unchanged documents
_SCHEMA_VERDICTS: dict[tuple[str, str], str | None] = {}


def _schema_problem(body: dict[str, Any], kubernetes_version: str) -> str | None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(body, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(root)"
        return f"{path}: {exc.message} (Kubernetes {kubernetes_version} schema)"
    except kubernetes_validate.SchemaNotFoundError:
        return f"no Kubernetes {kubernetes_version} schema for {body.get('apiVersion')} {body.get('kind')}"
    return None


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
    # apiVersion, field names, types and enums (spec.mode, ...) are the CRD schema's, checked in check_schemas
    if str(doc.body.get("apiVersion")) != "opentelemetry.io/v1beta1":
        m.add(c.file, f"OpenTelemetryCollector/{c.name}: apiVersion {doc.body.get('apiVersion')}; otelgate reads "
                      f"spec.config as structured YAML (v1beta1)")
    if problem := _image_pinned(c.spec.get("image")):
        m.add(c.file, f"OpenTelemetryCollector/{c.name}: spec.image {problem}")
    elif "contrib" not in str(c.spec.get("image")) and receiver(c.config, ("tcp_log", "tcplog")) is not None:
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
    otlp = receiver(c.config, ("otlp",)) or {}
    for protocol, settings in (otlp.get("protocols") or {}).items():
        endpoint = str((settings or {}).get("endpoint", "localhost"))
        if not endpoint.startswith(("0.0.0.0:", "[::]:", ":")):
            m.add(c.file, f"otlp {protocol} receiver listens on {endpoint!r}; in a pod it must bind 0.0.0.0 or no "
                          f"other pod reaches it")
    if receiver(c.config, ("tcp_log", "tcplog")) is not None and c.tcp_log is None:
        m.add(c.file, "the tcp_log receiver has no listen_address port")


def check_instrumentation(m: Manifests) -> None:
    for doc in m.objects("Instrumentation"):
        spec = doc.body.get("spec") or {}
        where = f"Instrumentation/{doc.name}"
        # apiVersion, field names, types and the propagator / sampler enums: the CRD schema, in check_schemas
        if not (spec.get("exporter") or {}).get("endpoint"):
            m.add(doc.file, f"{where}: spec.exporter.endpoint is missing")
        propagators = list(spec.get("propagators") or [])
        for needed in ("tracecontext", "baggage"):
            if needed not in propagators:
                m.add(doc.file, f"{where}: propagators {propagators} lack {needed} (W3C, what Kong injects)")
        sampler = spec.get("sampler") or {}
        if "ratio" in str(sampler.get("type")):
            try:
                if not 0.0 <= float(str(sampler.get("argument"))) <= 1.0:
                    raise ValueError
            except (TypeError, ValueError):
                m.add(doc.file, f"{where}: sampler.argument {sampler.get('argument')!r} must be a string ratio "
                                f"in [0, 1]")


def check_images(m: Manifests) -> None:
    for doc, template in pod_templates(m):
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


def check_injection(m: Manifests) -> None:
    instrumentations = {(d.namespace, d.name) for d in m.objects("Instrumentation")}
    for doc, template in pod_templates(m):
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
