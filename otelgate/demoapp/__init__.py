"""The local stack's demo services: the API of the cluster's demo app (odigos simple-demo), in plain Flask.

``python -m otelgate.demoapp <coupon|membership|inventory|pricing> --port P``. The code here makes no
OpenTelemetry calls: telemetry comes only from the zero-code instrumentation it is started under (see
:mod:`.launch`), exactly as the Operator injects it into the cluster's pods.
"""

from otelgate.demoapp.services import SERVICES, create_app, membership_base_url

__all__ = ["SERVICES", "create_app", "membership_base_url"]
