"""The fake Dynatrace sink: an OTLP/HTTP server with Dynatrace's ingest rules and a JSON query API."""

from otelgate.sink.client import SinkClient
from otelgate.sink.config import SinkConfig

__all__ = ["SinkClient", "SinkConfig"]
