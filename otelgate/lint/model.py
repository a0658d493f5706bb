"""The manifests as ``otelgate lint`` sees them: every YAML document with its file, the findings so far, and the facts
of the collector resource the cross-reference checks compare against."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml


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


# libyaml's safe loader when PyYAML has it (the same documents, ~10x faster than the pure-Python one)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(root: Path) -> Manifests:
    m = Manifests(root=root.resolve())
    for path in sorted([*m.root.rglob("*.yaml"), *m.root.rglob("*.yml")]):
        try:
            bodies = list(yaml.load_all(path.read_text(), Loader=_LOADER))
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


# --- helpers --------------------------------------------------------------------------------------------------------


def port_of(address: Any) -> int | None:
    match = re.search(r":(\d+)$", str(address or ""))
    return int(match.group(1)) if match else None


def url_parts(text: Any) -> tuple[str, int | None, str]:
    """(host, port, path) of a URL or of ``host[:port][/path]`` (the frontend's form without a scheme)."""
    raw = str(text or "")
    parts = urlsplit(raw if "://" in raw else f"http://{raw}")
    port = parts.port if parts.port is not None else (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port, parts.path or ""


def env_by_name(container: dict[str, Any]) -> dict[str, Any]:
    return {e.get("name"): e for e in container.get("env") or []}


def pod_templates(m: Manifests) -> Iterator[tuple[Doc, dict[str, Any]]]:
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


def receiver(config: dict[str, Any], type_names: tuple[str, ...]) -> dict[str, Any] | None:
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
    otlp = receiver(config, ("otlp",)) or {}
    protocols = otlp.get("protocols") or {}
    tcp = receiver(config, ("tcp_log", "tcplog")) or {}
    return CollectorFacts(
        file=doc.file, name=doc.name, namespace=doc.namespace,
        service_dns=f"{doc.name}-collector.{doc.namespace}.svc.cluster.local",
        otlp_http=port_of((protocols.get("http") or {}).get("endpoint")) if "http" in protocols else None,
        otlp_grpc=port_of((protocols.get("grpc") or {}).get("endpoint")) if "grpc" in protocols else None,
        tcp_log=port_of(tcp.get("listen_address")), config=config, spec=spec)
