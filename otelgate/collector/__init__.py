"""otelgate's OpenTelemetry Collector: find or build the distribution, derive a local config from the cluster's
``OpenTelemetryCollector`` resource, run it as a managed process."""

from otelgate.collector.build import (
    BuildResult,
    CollectorBuildError,
    CollectorNotFound,
    build,
    find_collector,
)
from otelgate.collector.config import (
    REWRITES,
    CollectorPorts,
    Rewrite,
    derive_local_config,
    load_collector_resource,
    local_env,
    resource_config,
)
from otelgate.collector.process import CollectorProcess, deprecated_aliases, validate

__all__ = [
    "REWRITES",
    "BuildResult",
    "CollectorBuildError",
    "CollectorNotFound",
    "CollectorPorts",
    "CollectorProcess",
    "Rewrite",
    "build",
    "deprecated_aliases",
    "derive_local_config",
    "find_collector",
    "load_collector_resource",
    "local_env",
    "resource_config",
    "validate",
]
