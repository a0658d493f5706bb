"""otelgate: prove that a Kong -> OpenTelemetry Collector -> Dynatrace observability pipeline works."""

__version__ = "0.1.0"

from otelgate.sink.client import SinkClient

__all__ = ["SinkClient", "__version__"]
