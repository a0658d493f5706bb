"""The `otelgate` command. Each subcommand lives with its concept; this file only wires them up."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, help). The module provides `add_arguments(parser)` and `run(args) -> int`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sink": ("otelgate.sink.cli", "run the fake Dynatrace (or plain OTLP) sink"),
    "up": ("otelgate.stacks.cli", "bring a stack up for a person to explore (or print its plan with --dry-run)"),
    "lint": ("otelgate.lint", "check the cluster manifests statically (schemas and cross-references)"),
    "report": ("otelgate.reports.cli", "render the HTML trace view from a saved sink dump"),
    "replay": ("otelgate.reports.replay", "re-run the suites' assertions against a saved sink dump"),
    "collector": ("otelgate.collector.cli", "find or build otelgate's collector distribution"),
    "kongsim": ("otelgate.kongsim.__main__", "run the Kong 3.9 simulator (a test double for the local stack)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otelgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # load only the module of the chosen subcommand, so one broken concept does not break the others
    if argv and argv[0] in SUBCOMMANDS:
        module_name, help_text = SUBCOMMANDS[argv[0]]
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"otelgate {argv[0]}", description=help_text)
        module.add_arguments(parser)
        rest = argv[1:]
        passthrough: list[str] = []
        if "--" in rest:  # `otelgate replay DUMP -- -k traces` hands the tail to pytest
            cut = rest.index("--")
            rest, passthrough = rest[:cut], rest[cut + 1:]
        args = parser.parse_args(rest)
        args.passthrough = passthrough
        return int(module.run(args) or 0)
    build_parser().parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
