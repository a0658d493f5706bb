"""Start a demo service under the OpenTelemetry zero-code instrumentation exactly as the Operator injects it.

The Operator's Python injection (operator 0.158 ``internal/instrumentation/python.go``) does not wrap the
command: it puts the ``auto_instrumentation`` directory first on ``PYTHONPATH`` so that its
``sitecustomize.py`` calls ``initialize()`` at interpreter start, and sets the exporter env. We take the same
route rather than the ``opentelemetry-instrument`` wrapper (which ends in the same ``initialize()`` after an
``execl`` through a ``PATH`` lookup): it is the pod's start path byte for byte, needs no executable on
``PATH``, and keeps the process we supervise the service itself, not a wrapper.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import opentelemetry.instrumentation.auto_instrumentation as _auto_instrumentation
import yaml

from otelgate import paths
from otelgate.controlplane.injection import load_rendering, resolve
from otelgate.demoapp.services import SERVICES

# Test timings. The SDK defaults (5 s span batch delay, 60 s metric interval) make a test wait seconds
# for data the service produced in milliseconds; shorter intervals keep the stack's canary and the suites
# fast without changing what is exported.
TEST_BSP_SCHEDULE_DELAY_MS = 200
TEST_METRIC_EXPORT_INTERVAL_MS = 2000
TEST_BLRP_SCHEDULE_DELAY_MS = 200  # log records, as spans (SDK default 5 s)
INSTRUMENTATION_YAML = paths.manifest("otel/instrumentation.yaml")
# the cluster's endpoint is replaced by the local collector's; every other variable is used as written
_REWRITTEN_ENV = frozenset({"OTEL_EXPORTER_OTLP_ENDPOINT"})


def auto_instrumentation_dir() -> Path:
    """The directory whose ``sitecustomize.py`` initializes the instrumentation (Operator's PYTHONPATH)."""
    return Path(_auto_instrumentation.__file__).resolve().parent


@dataclass(frozen=True)
class Instrumentation:
    """The ``Instrumentation`` resource's effect on a Python container, for the local stack."""

    otlp_endpoint: str                             # e.g. http://127.0.0.1:<collector otlp http port>
    sampler: str = "parentbased_traceidratio"
    sampler_arg: str = "1.0"
    propagators: tuple[str, ...] = ("tracecontext", "baggage")
    bsp_schedule_delay_ms: int = TEST_BSP_SCHEDULE_DELAY_MS
    metric_export_interval_ms: int = TEST_METRIC_EXPORT_INTERVAL_MS
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, otlp_endpoint: str, path: Path = INSTRUMENTATION_YAML, **options: object) -> Instrumentation:
        """Propagators, sampler and ``spec.python.env`` from the cluster's ``Instrumentation`` resource."""
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict) or doc.get("kind") != "Instrumentation":
            raise ValueError(f"{path} is not an Instrumentation resource")
        spec = doc.get("spec") or {}
        sampler = spec.get("sampler") or {}
        python_env = {str(item["name"]): str(item.get("value", ""))
                      for item in (spec.get("python") or {}).get("env") or []}
        fields: dict[str, object] = {
            "propagators": tuple(spec.get("propagators") or cls.propagators),
            "sampler": str(sampler.get("type") or cls.sampler),
            "sampler_arg": str(sampler.get("argument") or cls.sampler_arg),
            "extra_env": {k: v for k, v in python_env.items() if k not in _REWRITTEN_ENV},
        }
        fields.update(options)
        return cls(otlp_endpoint, **fields)  # type: ignore[arg-type]

    def env(self, service: str, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The process env: ``base_env`` without inherited ``OTEL_*`` variables, plus the Operator's."""
        base = dict(os.environ if base_env is None else base_env)
        env = {key: value for key, value in base.items() if not key.startswith("OTEL_")}
        pythonpath = [str(auto_instrumentation_dir())]
        if base.get("PYTHONPATH"):
            pythonpath.append(base["PYTHONPATH"])
        pod = f"{service}-local"
        env.update({
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "PYTHONUNBUFFERED": "1",
            "OTEL_SERVICE_NAME": service,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_PROPAGATORS": ",".join(self.propagators),
            "OTEL_TRACES_SAMPLER": self.sampler,
            "OTEL_TRACES_SAMPLER_ARG": self.sampler_arg,
            "OTEL_BSP_SCHEDULE_DELAY": str(self.bsp_schedule_delay_ms),
            "OTEL_METRIC_EXPORT_INTERVAL": str(self.metric_export_interval_ms),
            "OTEL_BLRP_SCHEDULE_DELAY": str(TEST_BLRP_SCHEDULE_DELAY_MS),
            # what the real Operator renders from the pod (otelgate/demoapp/operator-python-injection.yaml), for a
            # Deployment `<service>` whose pod `<service>-local` runs on node `local`
            "OTEL_RESOURCE_ATTRIBUTES": operator_resource_attributes(service, pod),
        })
        env.update(self.extra_env)
        return env


LOCAL_NODE = "local"


def operator_resource_attributes(service: str, pod: str) -> str:
    """``OTEL_RESOURCE_ATTRIBUTES`` of the Operator's rendering (made for one Deployment of manifests/app), with that
    Deployment's name replaced by ``service`` and the pod's downward-API values by the local pod's."""
    rendering = load_rendering()
    source = str(rendering["source"]["deployment"])
    fields = {"metadata.name": pod, "spec.nodeName": LOCAL_NODE, "status.podIP": "127.0.0.1",
              "status.hostIP": "127.0.0.1"}
    attributes = resolve(rendering["env"], fields).get("OTEL_RESOURCE_ATTRIBUTES", "")
    pairs = [part.split("=", 1) for part in attributes.split(",") if part]
    return ",".join(f"{key}={_for_service(value, source, service)}" for key, value in pairs)


def _for_service(value: str, source: str, service: str) -> str:
    """``inventory`` -> ``coupon`` in a name (``inventory``, ``inventory-5d8f7c9b6``, ``ns.pod.inventory``)."""
    return ".".join(re.sub(rf"^{re.escape(source)}(?=$|-)", service, part) for part in value.split("."))


def service_argv(service: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """The container command: the demo service itself (instrumentation comes in through ``PYTHONPATH``)."""
    if service not in SERVICES:
        raise ValueError(f"unknown demo service {service!r}; choose one of {', '.join(SERVICES)}")
    return [sys.executable, "-m", "otelgate.demoapp", service, "--host", host, "--port", str(port)]
