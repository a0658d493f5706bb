"""The Operator's Python injection as its pod webhook renders it, and the local stack's env measured against it.

The rendering (the env of the instrumented container of an admitted pod) is checked in as
:data:`RENDERED_FILE`, written by ``python -m otelgate.controlplane render-injection`` against the real Operator;
``tests/test_controlplane.py`` fails when the live rendering and the copy differ, and
``tests/test_controlplane_offline.py`` compares the local stack's env with the copy without any control plane.

The local stack's env may differ from the rendering only as :data:`LOCAL_REWRITES` and :data:`LOCAL_ONLY` say;
variables the kubelet resolves (``valueFrom`` the downward API) and ``$(VAR)`` references are resolved with the
local pod's facts first, as the kubelet would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from otelgate.controlplane.versions import OPERATOR_VERSION

RENDERED_FILE = Path(__file__).resolve().parents[1] / "demoapp" / "operator-python-injection.yaml"
LOCAL_REWRITES: dict[str, str] = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "the local collector's OTLP/HTTP endpoint instead of the collector Service's",
    "PYTHONPATH": "the installed opentelemetry-instrumentation's auto_instrumentation directory first, as the "
                  "Operator puts the image's copy first; then the inherited PYTHONPATH",
}
LOCAL_ONLY: dict[str, str] = {
    "PYTHONUNBUFFERED": "service output reaches the stack's log files at once",
    "OTEL_BSP_SCHEDULE_DELAY": "test timing: spans leave the service within 200 ms (SDK default 5 s)",
    "OTEL_METRIC_EXPORT_INTERVAL": "test timing: metrics every 2 s (SDK default 60 s)",
    "OTEL_BLRP_SCHEDULE_DELAY": "test timing: log records leave the service within 200 ms (SDK default 5 s)",
}
AUTO_INSTRUMENTATION_SUFFIX = "opentelemetry/instrumentation/auto_instrumentation"
_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def rendered_env(pod: Mapping[str, Any], container: str | None = None) -> list[dict[str, Any]]:
    """The env list of the (first, or named) app container of an admitted pod."""
    containers = pod["spec"]["containers"]
    chosen = next((c for c in containers if container in (None, c["name"])), None)
    if chosen is None:
        raise ValueError(f"no container {container!r} in pod {pod['metadata'].get('name')}")
    return [dict(item) for item in chosen.get("env") or []]


def write_rendering(env: list[dict[str, Any]], source: Mapping[str, str], path: Path = RENDERED_FILE) -> None:
    header = (f"# The Python injection of the OpenTelemetry Operator {OPERATOR_VERSION}, rendered by its real pod\n"
              f"# webhook (python -m otelgate.controlplane render-injection) for the container of\n"
              f"# {source['deployment']} in manifests/app with manifests/otel/instrumentation.yaml.\n"
              f"# Generated: do not edit; tests/test_controlplane.py fails when the live rendering differs.\n")
    body = {"operator": OPERATOR_VERSION, "source": dict(source), "env": env}
    path.write_text(header + yaml.safe_dump(body, sort_keys=False, width=120))


def load_rendering(path: Path = RENDERED_FILE) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("env"), list):
        raise ValueError(f"{path} holds no rendered env")
    return doc


def resolve(env: list[dict[str, Any]], pod_fields: Mapping[str, str]) -> dict[str, str]:
    """Values as the container sees them: downward-API fields from ``pod_fields`` (``metadata.name``,
    ``spec.nodeName``, ``status.podIP``, ...), then ``$(VAR)`` references to variables defined earlier."""
    resolved: dict[str, str] = {}
    for item in env:
        if "valueFrom" in item:
            field = str(((item["valueFrom"] or {}).get("fieldRef") or {}).get("fieldPath"))
            if field not in pod_fields:
                raise ValueError(f"{item['name']}: no local value for the downward-API field {field!r}")
            resolved[item["name"]] = pod_fields[field]
        else:
            value = str(item.get("value", ""))
            resolved[item["name"]] = _REF.sub(lambda m: resolved.get(m.group(1), m.group(0)), value)
    return resolved


def unexplained_differences(rendered: list[dict[str, Any]], local: Mapping[str, str],
                            pod_fields: Mapping[str, str]) -> list[str]:
    """Every difference between the Operator's env (resolved) and the local one that no listed rewrite explains."""
    cluster = resolve(rendered, pod_fields)
    downward = {item["name"] for item in rendered if "valueFrom" in item}
    problems: list[str] = []
    for name in sorted(set(cluster) | set(local)):
        if name in LOCAL_ONLY or name in downward:
            continue
        if name not in local:
            problems.append(f"{name}: the Operator sets {cluster[name]!r}, the local stack does not")
        elif name not in cluster:
            problems.append(f"{name}: the local stack sets {local[name]!r}, the Operator does not")
        elif name == "OTEL_RESOURCE_ATTRIBUTES":
            problems += _attribute_differences(cluster[name], local[name])
        elif name == "PYTHONPATH":
            if not local[name].split(":")[0].endswith(AUTO_INSTRUMENTATION_SUFFIX):
                problems.append(f"PYTHONPATH: local {local[name]!r} does not start with the auto_instrumentation dir")
        elif name not in LOCAL_REWRITES and cluster[name] != local[name]:
            problems.append(f"{name}: Operator {cluster[name]!r} != local {local[name]!r}")
    return problems


def _attribute_differences(cluster: str, local: str) -> list[str]:
    left, right = _attributes(cluster), _attributes(local)
    return [f"OTEL_RESOURCE_ATTRIBUTES {key}: Operator {left.get(key)!r} != local {right.get(key)!r}"
            for key in sorted(set(left) | set(right)) if left.get(key) != right.get(key)]


def _attributes(text: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in text.split(",") if part)
    return {key: value for key, value in pairs}
