"""Every stack otelgate can run, by the name ``--stack`` takes: one :class:`~otelgate.stacks.base.StackModule`
each. ``otelgate up`` and the pytest plugin reach a stack only through here.

A stack's module is imported when the stack is asked for (the local stack alone pulls in Flask and the
OpenTelemetry instrumentation: a second on every pytest start otherwise).
"""

from __future__ import annotations

from collections.abc import Callable

from otelgate.stacks.base import StackModule


def _local() -> StackModule:
    from otelgate.stacks.local_cli import STACK

    return STACK


def _kind() -> StackModule:
    from otelgate.stacks.kind import STACK

    return STACK


def _external() -> StackModule:
    from otelgate.stacks.external import STACK

    return STACK


def _docker() -> StackModule:
    from otelgate.stacks.docker.cli import STACK

    return STACK


_LOADERS: dict[str, Callable[[], StackModule]] = {
    "local": _local,
    "kind": _kind,
    "external": _external,
    "docker": _docker,
}
STACK_NAMES: tuple[str, ...] = tuple(_LOADERS)


def stack_module(name: str) -> StackModule:
    """The stack called ``name``; ``KeyError`` names the stacks there are."""
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise KeyError(f"no stack {name!r}; otelgate has {', '.join(STACK_NAMES)}") from None
    return loader()
