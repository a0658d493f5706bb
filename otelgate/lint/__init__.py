"""``otelgate lint manifests/``: static checks of everything the kind and external stacks apply.

1. every YAML file parses;
2. built-in Kubernetes kinds validate against the offline schemas of kubernetes-validate (strict: unknown fields
   are errors), at the kind node's Kubernetes version;
3. the custom resources carry what the OpenTelemetry Operator needs (collector: mode, pinned image, a config whose
   pipelines name defined components, receivers bound to 0.0.0.0; Instrumentation: endpoint, propagators, sampler);
4. the cross-references hold — each mismatch is ONE line naming both sides:
   the collector Service DNS name and ports used by Kong's plugins, the Instrumentation and the app = the collector
   resource's name, namespace and receivers; tcp-log port = the tcp_log receiver's; the scrape config's pod
   selector and port select Kong's pods (labels from the chart's conventions + values) on the Status API; the
   frontend's ``*_SERVICE_HOST`` reach the right service through a Kong route; the exporter's endpoint (Secret) is
   the sink Service; RBAC exists for the collector's ServiceAccount; kind's port mappings match the NodePorts;
   images are pinned.

The package: :mod:`.model` (the loaded manifests, findings, the collector's facts), :mod:`.resources` (checks 1-3:
schemas, the custom resources, images, injection annotations, Kong's values), :mod:`.crossrefs` (check 4),
:mod:`.exporting` (collector listeners sharing a port; each injected language's effective OTLP protocol and logs
exporter against the collector's receivers; a sampler dropping roots Kong should decide), :mod:`.datapath` (every
source of telemetry reaches the Dynatrace exporter through a pipeline of its signal). It reads
the cluster's names from :mod:`otelgate.cluster_topology` and imports no deployment code. decK lives in
:mod:`otelgate.deck`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from otelgate import paths
from otelgate.cluster_topology import TOPOLOGY, Topology
from otelgate.lint.crossrefs import (
    check_exporter_secret,
    check_frontend,
    check_instrumentation_endpoints,
    check_kind_ports,
    check_kong_plugins,
    check_kong_services,
    check_rbac,
    check_scrape_config,
)
from otelgate.lint.datapath import check_backend_resilience, check_data_paths, check_tcp_log_fields
from otelgate.lint.exporting import check_listeners, check_protocols, check_root_sampling
from otelgate.lint.model import Finding, collector_facts, load
from otelgate.lint.resources import (
    KUBERNETES_VERSION,
    check_collector_resource,
    check_images,
    check_injection,
    check_instrumentation,
    check_kong_values,
    check_schemas,
)

__all__ = ["Finding", "add_arguments", "lint_manifests", "run"]


def lint_manifests(root: str | Path = "manifests", *, topology: Topology = TOPOLOGY,
                   kubernetes_version: str = KUBERNETES_VERSION) -> list[Finding]:
    """Every finding for the manifests under ``root`` (empty = clean)."""
    m = load(Path(root))
    check_schemas(m, kubernetes_version)
    check_images(m)
    check_instrumentation(m)
    check_injection(m)
    check_kong_values(m)
    check_kind_ports(m, topology)
    kong = m.file_doc("kong/kong.yaml")
    if kong is None:
        m.add("manifests/kong", "no kong/kong.yaml")
    facts = collector_facts(m)
    if facts is not None:
        check_collector_resource(m, facts)
        check_listeners(m, facts)
        check_data_paths(m, facts, kong)
        check_backend_resilience(m, facts)
        check_rbac(m, facts, topology)
        check_scrape_config(m, facts, topology)
        check_instrumentation_endpoints(m, facts)
        check_protocols(m, facts)
        check_exporter_secret(m, facts, topology)
        if kong is not None:
            check_kong_plugins(m, facts, kong)
            check_tcp_log_fields(m, facts, kong)
    if kong is not None:
        check_kong_services(m, kong)
        check_root_sampling(m, kong)
        check_frontend(m, kong, topology)
    return m.findings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default=None, type=Path,
                        help="the manifests folder (default: --manifests, else the demo deployment otelgate ships)")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION,
                        help=f"schema version for built-in kinds (default {KUBERNETES_VERSION}, the kind node's)")
    parser.add_argument("--ensure-deck", action="store_true",
                        help="only find decK, or build it from the Go module proxy into the cache, and print its path")


def run(args: argparse.Namespace) -> int:
    if args.ensure_deck:
        from otelgate.deck import DeckUnavailable, find_deck

        try:
            print(f"decK: {find_deck(build_if_missing=True)}", flush=True)
        except DeckUnavailable as exc:
            print(f"error: {exc}", flush=True)
            return 1
        return 0
    args.path = args.path or getattr(args, "manifests", None) or paths.manifests_dir()
    if not args.path.is_dir():
        print(f"error: {args.path} is not a folder", flush=True)
        return 2
    findings = lint_manifests(args.path, kubernetes_version=args.kubernetes_version)
    for finding in findings:
        print(finding)
    files = len({p for p in args.path.rglob("*.y*ml")})
    print(f"otelgate lint: {files} files, {len(findings)} finding(s)")
    return 1 if findings else 0
