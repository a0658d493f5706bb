"""``otelgate up --stack local``: the plan (``--dry-run``), the prerequisites check and a bring-up for a person to
explore, with a live HTML trace view; :data:`STACK` is the local stack's :class:`otelgate.stacks.base.StackModule`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from otelgate.demoapp.launch import INSTRUMENTATION_YAML
from otelgate.stacks.base import StackEntry, StackOptions, StackStartError
from otelgate.stacks.console import print_status_until_interrupted, print_urls, sink_status, stop_on_signals
from otelgate.stacks.local import (
    CANARY_PATH,
    COLLECTOR_YAML,
    DEMO_SERVICES,
    KONG_YAML,
    MANIFESTS,
    TOKEN_ENV,
    TOPOLOGY,
    LocalStack,
)

REQUIRED_MODULES = ("otelgate.sink.server", "otelgate.collector", "otelgate.kongconfig", "otelgate.kongsim", "lupa")


def plan() -> list[str]:
    """What ``LocalStack.start`` would run, in order (ports are free ones chosen at start, all on 127.0.0.1)."""
    return [
        "local stack plan (every process on 127.0.0.1, free ports chosen at start, logs in <workdir>/logs):",
        f"1. sink: python -m otelgate sink --profile dynatrace --token-env {TOKEN_ENV} (token generated, never "
        "printed); ready on GET /healthz",
        f"2. collector: otelgate.collector.find_collector() with the config derived from {COLLECTOR_YAML} "
        "(rewrites: otelgate.collector.REWRITES; Kong Status API as static scrape target, exporter -> sink); "
        "ready on its health check",
        f"3. demo services {', '.join(DEMO_SERVICES)}: python -m otelgate.demoapp under the Operator's Python "
        f"injection (PYTHONPATH sitecustomize, env from {INSTRUMENTATION_YAML}); ready on GET /healthz",
        f"4. Kong 3.9 simulator (a test double): python -m otelgate.kongsim with the config derived from {KONG_YAML} "
        "(rewrites: otelgate.kongconfig.KONG_REWRITES); ready on Admin GET /status and the proxy port",
        f"5. canary: GET {CANARY_PATH} through the gateway until its Kong root span is in the sink "
        f"(then up to 5 s more for the rest of its trace, {' -> '.join(TOPOLOGY.canary.service_path)}); then the "
        "sink is reset",
    ]


def check_prerequisites() -> list[str]:
    """Problems that would stop the local stack from starting (empty when it can start)."""
    import importlib

    problems = [f"{path} is missing" for path in (KONG_YAML, COLLECTOR_YAML, INSTRUMENTATION_YAML)
                if not path.is_file()]
    for module in REQUIRED_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            problems.append(f"python module {module} cannot be imported: {exc}")
    try:
        from otelgate.collector import find_collector

        find_collector()
    except ImportError:
        pass  # reported above
    except Exception as exc:
        problems.append(f"collector binary: {exc}")
    return problems


def up(options: StackOptions, status_interval: float) -> int:
    """``otelgate up --stack local``: bring the stack up, print its URLs and a live trace view, then status lines
    until Ctrl-C; everything started is stopped at the end."""
    from otelgate.reports.html import LiveViewServer

    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="otelgate-local-"))
    stop_on_signals()
    print(f"starting the local stack (Kong simulator = a test double of Kong 3.9); logs in {workdir}", flush=True)
    try:
        stack = LocalStack.start(options.settings, workdir)
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
        view = LiveViewServer(stack.sink.dump, title="local stack", refresh_seconds=5).start()
        print_urls({**stack.urls(), "live trace view": view.url})
        print(f"try:  curl -i {stack.gateway_url}{CANARY_PATH}     (Ctrl-C stops everything)", flush=True)
        print_status_until_interrupted(lambda: sink_status(stack.sink, _collector_state(stack)), status_interval)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping the local stack ...", flush=True)
        if view is not None:
            view.stop()
        stack.close()
        print("stopped; no process left, ports released")
    return 0


def _collector_state(stack: LocalStack) -> str:
    return "up" if stack.collector_pid() is not None else "DOWN"


STACK = StackEntry("local", MANIFESTS, plan_lines=lambda _options: plan(),
                   problems=lambda _options: check_prerequisites(),
                   bring_up=lambda options: LocalStack.start(options.settings, options.workdir), serve=up)
