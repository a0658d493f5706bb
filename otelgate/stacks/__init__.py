"""Stacks: where the pipeline under test runs. Every stack implements :class:`Stack` (what the suites see) and offers
one :class:`StackModule` (plan, prerequisites, start, up), listed in :mod:`otelgate.stacks.registry`."""

from otelgate.stacks.base import Stack, StackModule, StackOptions, StackSettings, StackStartError

__all__ = ["Stack", "StackModule", "StackOptions", "StackSettings", "StackStartError"]
