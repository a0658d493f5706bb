"""Stacks: where the pipeline under test runs. One file per stack; every stack implements :class:`Stack`."""

from otelgate.stacks.base import Stack, StackSettings

__all__ = ["Stack", "StackSettings"]
