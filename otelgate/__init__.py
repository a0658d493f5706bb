"""otelgate: prove that a Kong -> OpenTelemetry Collector -> Dynatrace observability pipeline works."""

__version__ = "0.1.0"
