"""The docker stack: real Kong 3.9 and the real collector in containers, on one Docker network, no Kubernetes.

    client -> Kong (official image, DB-less, the derived kong.yaml) -> demo services (otelgate image, zero-code
                 |  opentelemetry (OTLP/HTTP), tcp-log, /metrics scraped on kong:8100      |  OTLP/HTTP
                 v                                                                        v
            collector (the CR's contrib image, config derived from manifests/otel/collector.yaml)
                 v
            sink (otelgate's fake Dynatrace, the image built from the project's Dockerfile)

The containers are started with testcontainers-python. :func:`.specs.container_specs` is the single description of
what runs (image, command, env, files, ports, network aliases, readiness); the stack starts exactly that, and
``otelgate up --stack docker --dry-run`` prints exactly that (:func:`.cli.plan`), so the static tests check the same
objects the stack uses.

Configs come from the cluster's manifests by the same explicit rewrites the local stack uses:
``otelgate.kongconfig.derive_kong_config`` (``KONG_REWRITES``: upstream URLs -> ``http://<service>:8080``, the
traces endpoint and tcp-log target -> the ``collector`` container) and ``otelgate.collector.derive_local_config``
(``REWRITES``: pod discovery -> the static target ``kong:8100``, the exporter -> the ``sink`` container). The
collector's listen addresses are then put back to the resource's own ``0.0.0.0:<port>`` (a container must listen
on its network interface), so in the container they equal the manifest.

Readiness means "serving": HTTP 200 from the sink's ``/healthz``, the collector's health_check extension, each demo
service's ``/healthz`` and Kong's ``/status/ready`` (the Helm chart's readiness probe), then one canary request
whose Kong span reaches the sink (the rest of its trace is reported, not required). A wait fails at once, with the
log tail, if its container exits.

No Docker engine exists where this package is developed: it is verified statically (see docs/docker.md).

The package, one concern a module: :mod:`.specs` (what runs: the container specs, derived from the manifests),
:mod:`.daemon` (reaching a Docker daemon, the testcontainers import), :mod:`.evidence` (what proves a bring-up or a
change took effect: the canary trace, Kong's reload log lines), :mod:`.stack` (:class:`DockerStack`: lifecycle,
reconfigure, diagnostics) and :mod:`.cli` (``otelgate up --stack docker``: plan, prerequisites, the status loop).
"""
