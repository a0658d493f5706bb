"""`otelgate collector`: find or build otelgate's collector distribution."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from otelgate import paths
from otelgate.collector.build import CollectorBuildError, CollectorNotFound, build, find_collector


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--build", action="store_true",
                        help="build into the cache if the manifest changed; always report build time and size")
    action.add_argument("--ensure", action="store_true",
                        help="build only if no collector is found; in CI or with OTELGATE_REQUIRE_COLLECTOR=1 "
                             "failing to obtain one is an error, elsewhere a warning")
    action.add_argument("--path", action="store_true", help="print the path of the collector that would be used")
    action.add_argument("--components", action="store_true", help="run `<collector> components`")
    parser.add_argument("--force", action="store_true", help="with --build: rebuild even when cached")
    parser.add_argument("--builder-config", type=Path, default=None, metavar="FILE",
                        help="an OpenTelemetry Collector Builder manifest of your own (default: the one otelgate "
                             "ships, collector/builder-config.yaml); built and cached by its hash")


def collector_required() -> bool:
    """In CI (or when asked) a missing collector is a failure, never a skip."""
    return bool(os.environ.get("CI")) or os.environ.get("OTELGATE_REQUIRE_COLLECTOR") == "1"


def run(args: argparse.Namespace) -> int:
    # SIGTERM unwinds like Ctrl-C, so an interrupted build stops its go toolchain processes too
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    manifest = getattr(args, "builder_config", None) or paths.collector_manifest()
    if not manifest.is_file():
        print(f"otelgate collector: --builder-config {manifest}: no such file", file=sys.stderr)
        return 2
    try:
        if args.build:
            print(build(manifest=manifest, force=args.force).summary())
            return 0
        if args.ensure:
            return _ensure(manifest)
        binary = find_collector(manifest=manifest)
        if args.components:
            return subprocess.run([str(binary), "components"], timeout=60).returncode
        print(binary)
        return 0
    except (CollectorNotFound, CollectorBuildError) as exc:
        print(f"otelgate collector: {exc}", file=sys.stderr)
        return 1


def _ensure(manifest: Path) -> int:
    try:
        binary = find_collector(build_if_missing=True, manifest=manifest)
    except (CollectorNotFound, CollectorBuildError) as exc:
        if collector_required():
            print(f"otelgate collector --ensure: ERROR (collector required here): {exc}", file=sys.stderr)
            return 1
        print(f"otelgate collector --ensure: WARNING, tests that need it will be skipped: {exc}", file=sys.stderr)
        return 0
    print(f"collector: {binary}")
    return 0
