"""``otelgate up``: bring a stack up for a person to explore, or print its plan / check its prerequisites.

Every stack is a :class:`~otelgate.stacks.base.StackModule` in :mod:`otelgate.stacks.registry`; this module only
turns the command line into :class:`~otelgate.stacks.base.StackOptions` and calls it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from otelgate.stacks.base import StackModule, StackOptions, StackSettings, StackStartError
from otelgate.stacks.registry import STACK_NAMES, stack_module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", choices=STACK_NAMES, default="local", help="where the pipeline runs (default local)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print what would be started, start nothing")
    mode.add_argument("--check-prerequisites", action="store_true",
                      help="check that the tools and files the stack needs are there, start nothing")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where process logs and derived configs go (default: a new temporary folder)")
    parser.add_argument("--status-interval", type=float, default=5.0, help="seconds between status lines")
    parser.add_argument("--sampling-rate", type=float, default=None,
                        help="Kong opentelemetry plugin config.sampling_rate (default: as in kong.yaml)")
    parser.add_argument("--tracing-sampling-rate", type=float, default=1.0,
                        help="kong.conf tracing_sampling_rate (default 1.0)")
    parser.add_argument("--keep", action="store_true",
                        help="docker: leave the containers running after Ctrl-C (prints how to remove them)")
    cluster = parser.add_argument_group("kind / external")
    cluster.add_argument("--cluster-name", default=None, help="kind cluster name (default otelgate)")
    cluster.add_argument("--keep-cluster", action="store_true",
                         help="reuse the kind cluster between runs and keep it afterwards")
    cluster.add_argument("--kubeconfig", type=Path, default=None, help="external: kubeconfig of the target cluster")
    cluster.add_argument("--sink-image", default=None,
                         help="docker, external: a built sink image to use (default: build it; a cluster must be "
                         "able to pull it)")


def options_from(args: argparse.Namespace) -> StackOptions:
    settings = StackSettings(sampling_rate=args.sampling_rate, tracing_sampling_rate=args.tracing_sampling_rate)
    return StackOptions(settings=settings, workdir=args.workdir, keep=bool(args.keep or args.keep_cluster),
                        manifests=getattr(args, "manifests", None), cluster_name=args.cluster_name,
                        kubeconfig=args.kubeconfig, sink_image=args.sink_image)


def run(args: argparse.Namespace) -> int:
    module = stack_module(args.stack)
    options = options_from(args)
    if args.check_prerequisites:
        return report_prerequisites(module, options)
    try:
        if args.dry_run:
            for line in module.plan(options):
                print(line)
            return 0
        return module.up(options, args.status_interval)
    except StackStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def report_prerequisites(module: StackModule, options: StackOptions) -> int:
    problems = module.check_prerequisites(options)
    for problem in problems:
        print(f"missing: {problem}", file=sys.stderr)
    print(f"{module.name} stack prerequisites: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 0 if not problems else 1
