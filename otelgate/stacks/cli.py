"""``otelgate up``: bring a stack up for a person to explore, or print its plan / check its prerequisites.

``--stack local`` runs here (see :mod:`otelgate.stacks.local`). Every other stack lives in
``otelgate.stacks.<name>`` and is reached by name: ``plan()`` for ``--dry-run``, ``check_prerequisites()`` for
``--check-prerequisites`` and ``up(args)`` for a bring-up.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from otelgate.stacks.base import StackSettings

STACKS = ("local", "kind", "external", "docker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", choices=STACKS, default="local", help="where the pipeline runs (default local)")
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
                         help="external: sink image reference the cluster can pull (default: build and load it)")


def run(args: argparse.Namespace) -> int:
    module = _stack_module(args.stack)
    if module is None:
        return 2
    try:
        return _dispatch(module, args)
    except _MissingEntryPoint:
        return 2


def _dispatch(module: ModuleType, args: argparse.Namespace) -> int:
    if args.check_prerequisites:
        return _report_prerequisites(args.stack, _call(module, "check_prerequisites", args))
    if args.dry_run:
        _print_plan(_call(module, "plan", args))
        return 0
    if args.stack == "local":
        return _run_local(args)
    return int(_call(module, "up", args) or 0)


def _stack_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"otelgate.stacks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"otelgate.stacks.{name}":
            raise
        print(f"error: the {name!r} stack is not available in this otelgate (otelgate/stacks/{name}.py is missing)",
              file=sys.stderr)
        return None


class _MissingEntryPoint(Exception):
    pass


def _call(module: ModuleType, function: str, args: argparse.Namespace) -> Any:
    target: Callable[..., Any] | None = getattr(module, function, None)
    if target is None:
        print(f"error: {module.__name__} has no {function}(); this stack cannot do that yet", file=sys.stderr)
        raise _MissingEntryPoint(function)
    takes_args = bool(inspect.signature(target).parameters)
    return target(args) if takes_args else target()


def _report_prerequisites(stack: str, result: Any) -> int:
    """``check_prerequisites()`` may return problems (list of str), a bool, or None (= fine)."""
    if isinstance(result, bool):
        problems = [] if result else [f"the {stack} stack's prerequisites are not met"]
    elif result is None:
        problems = []
    else:
        problems = [str(p) for p in result]
    for problem in problems:
        print(f"missing: {problem}", file=sys.stderr)
    print(f"{stack} stack prerequisites: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 0 if not problems else 1


def _print_plan(plan: Any) -> None:
    if isinstance(plan, str):
        print(plan)
    elif isinstance(plan, dict):
        for key, value in plan.items():
            print(f"{key}: {value}")
    else:
        for line in plan or []:
            print(line)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run_local(args: argparse.Namespace) -> int:
    from otelgate.reports.html import LiveViewServer
    from otelgate.stacks.local import LocalStack, StackStartError

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="otelgate-local-"))
    settings = StackSettings(sampling_rate=args.sampling_rate, tracing_sampling_rate=args.tracing_sampling_rate)
    # Ctrl-C and `kill` both stop cleanly; SIGINT is re-armed because a shell starts background jobs with it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    print(f"starting the local stack (Kong simulator = a test double of Kong 3.9); logs in {workdir}", flush=True)
    try:
        stack = LocalStack.start(settings, workdir)
    except KeyboardInterrupt:
        print("interrupted during bring-up; everything started was stopped", file=sys.stderr)
        return 130
    except (StackStartError, AssertionError, RuntimeError, OSError) as exc:
        print(f"error: the local stack did not come up (everything started was stopped):\n{exc}", file=sys.stderr)
        return 1
    view: LiveViewServer | None = None
    try:
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in stack.step_seconds.items())
        print(f"up in {stack.bring_up_seconds:.1f} s to the first green canary ({steps}). URLs:")
        width = max(len(name) for name in stack.urls())
        for name, url in stack.urls().items():
            print(f"  {name:<{width}}  {url}")
        view = LiveViewServer(stack.sink.dump, title="local stack", refresh_seconds=5).start()
        print(f"  {'live trace view':<{width}}  {view.url}")
        print("try:  curl -i " + stack.gateway_url + "/coupon/coupons     (Ctrl-C stops everything)", flush=True)
        _stream_status(stack, args.status_interval)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping the local stack ...", flush=True)
        if view is not None:
            view.stop()
        stack.close()
        print("stopped; no process left, ports released")
    return 0


def _stream_status(stack: Any, interval: float) -> None:
    while True:
        print(status_line(stack), flush=True)
        time.sleep(interval)


def status_line(stack: Any) -> str:
    """One line: what the sink has seen per signal, and rejections."""
    try:
        stats = stack.sink.stats()
    except Exception as exc:
        return f"{time.strftime('%H:%M:%S')} sink unreachable: {exc!r}"
    parts = []
    for signal_name in ("traces", "metrics", "logs"):
        s = stats.get(signal_name, {})
        parts.append(f"{signal_name} {s.get('requests', 0)} req/{s.get('items', 0)} items"
                     + (f" ({s['rejected_items']} rejected)" if s.get("rejected_items") else ""))
    collector = "up" if stack.collector_pid() is not None else "DOWN"
    return f"{time.strftime('%H:%M:%S')} sink: " + ", ".join(parts) + f"; collector {collector}"
