"""The `otelgate` command. Each subcommand lives with its concept; this file only wires them up."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from otelgate import extras, paths

# subcommand -> (module, help). The module provides `add_arguments(parser)` and `run(args) -> int`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sink": ("otelgate.sink.cli", "run the fake Dynatrace (or plain OTLP) sink"),
    "up": ("otelgate.stacks.cli", "bring a stack up for a person to explore (or print its plan with --dry-run)"),
    "lint": ("otelgate.lint", "check the cluster manifests statically (schemas and cross-references)"),
    "report": ("otelgate.reports.cli", "render the HTML trace view from a saved sink dump"),
    "replay": ("otelgate.reports.replay", "re-run the suites' assertions against a saved sink dump"),
    "collector": ("otelgate.collector.cli", "find or build otelgate's collector distribution"),
    "kongsim": ("otelgate.kongsim.__main__", "run the Kong 3.9 simulator (a test double for the local stack)"),
    "outage": ("otelgate.resilience_cli", "measure the longest backend outage the pipeline survives without loss"),
    "mutate": ("otelgate.mutate.cli", "mutation testing: which misconfigurations of the manifests the gate catches"),
}
# Subcommands that read the deployment's manifests folder take --manifests DIR. It is applied before the
# subcommand's module is imported, so module-level reads of the folder (and child processes) see it too.
READS_MANIFESTS = frozenset({"up", "lint", "replay", "outage", "mutate"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otelgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        if name in READS_MANIFESTS:
            _manifests_option(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # load only the module of the chosen subcommand, so one broken concept does not break the others
    if argv and argv[0] in SUBCOMMANDS:
        name, rest = argv[0], argv[1:]
        passthrough: list[str] = []
        if "--" in rest:  # `otelgate replay DUMP -- -k traces` hands the tail to pytest
            cut = rest.index("--")
            rest, passthrough = rest[:cut], rest[cut + 1:]
        if name in READS_MANIFESTS and not _apply_manifests(name, rest):
            return 2
        try:
            return _run(name, rest, passthrough)
        except ModuleNotFoundError as exc:
            line = extras.hint(exc)
            if line is None:
                raise
            print(f"otelgate {name}: {line}", file=sys.stderr)
            return extras.EXIT_MISSING_EXTRA
    build_parser().parse_args(argv)
    return 2


def _manifests_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifests", type=Path, metavar="DIR", default=None,
                        help="the deployment's manifests folder, with its otelgate.toml (default: the demo "
                             f"deployment otelgate ships, or ${paths.MANIFESTS_ENV})")


def _apply_manifests(name: str, rest: list[str]) -> bool:
    early = argparse.ArgumentParser(add_help=False)
    _manifests_option(early)
    known, _ = early.parse_known_args(rest)
    if known.manifests is None:
        return True
    try:
        paths.use_manifests(known.manifests)
    except paths.ManifestsError as exc:
        print(f"otelgate {name}: --manifests {exc}", file=sys.stderr)
        return False
    return True


def _run(name: str, rest: list[str], passthrough: list[str]) -> int:
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"otelgate {name}", description=help_text)
    module.add_arguments(parser)
    if name in READS_MANIFESTS:
        _manifests_option(parser)
    args = parser.parse_args(rest)
    args.passthrough = passthrough
    if name in READS_MANIFESTS:
        args.manifests = paths.manifests_dir()
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
