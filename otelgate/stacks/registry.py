"""Every stack otelgate can run, by the name ``--stack`` takes: one :class:`~otelgate.stacks.base.StackModule`
each. ``otelgate up`` and the pytest plugin reach a stack only through here.

A stack's module is imported when the stack is asked for (the local stack alone pulls in Flask and the
OpenTelemetry instrumentation: a second on every pytest start otherwise).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from otelgate.stacks.base import Stack, StackModule, StackOptions, StackStartError


class _KindLike:
    """TEMPORARY adapter for the kind and external stacks until they define their own ``STACK`` (issue #13)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _namespace(self, options: StackOptions) -> argparse.Namespace:
        return argparse.Namespace(sampling_rate=options.settings.sampling_rate,
                                  tracing_sampling_rate=options.settings.tracing_sampling_rate,
                                  workdir=options.workdir, cluster_name=options.cluster_name,
                                  keep_cluster=options.keep or None, kubeconfig=options.kubeconfig,
                                  sink_image=options.sink_image)

    def plan(self, options: StackOptions) -> list[str]:
        from otelgate.stacks import external, kind

        return (external.plan if self.name == "external" else kind.plan)(self._namespace(options))

    def check_prerequisites(self, options: StackOptions) -> list[str]:
        from otelgate.stacks import external, kind

        return external.check_prerequisites() if self.name == "external" else kind.check_prerequisites()

    def start(self, options: StackOptions) -> Stack:
        from otelgate.stacks import kind
        from otelgate.stacks.external import ExternalStack

        external = self.name == "external"
        missing = self.check_prerequisites(options)
        if missing:
            raise StackStartError(f"the {self.name} stack cannot start:\n  " + "\n  ".join(missing))
        kind_options = kind.KindOptions.from_namespace(self._namespace(options), external=external)
        return (ExternalStack if external else kind.KindStack).start(kind_options)

    def up(self, options: StackOptions, status_interval: float) -> int:
        from otelgate.stacks import kind

        return kind.up(self._namespace(options), external=self.name == "external")


def _local() -> StackModule:
    from otelgate.stacks.local_cli import STACK

    return STACK


def _docker() -> StackModule:
    from otelgate.stacks.docker.cli import STACK

    return STACK


_LOADERS: dict[str, Callable[[], StackModule]] = {
    "local": _local,
    "kind": lambda: _KindLike("kind"),
    "external": lambda: _KindLike("external"),
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
