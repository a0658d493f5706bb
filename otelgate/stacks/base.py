"""The one interface the suites see. The suites never know where the pipeline runs."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from otelgate.sink.client import SinkClient


@dataclass(frozen=True)
class StackSettings:
    """What a stack may be asked to change. ``None`` means "as in the manifests".

    Faults for negative controls are expressed here too, so a control is "the same stack, one setting changed".
    """

    sampling_rate: float | None = None          # Kong: opentelemetry plugin config.sampling_rate
    tracing_sampling_rate: float = 1.0          # Kong: kong.conf tracing_sampling_rate
    # Kong plugin overrides, as dotted paths into the plugin's config, e.g. {"tcp-log": {"custom_fields_by_lua": None}}
    kong_plugin_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Collector faults
    drop_processors: tuple[str, ...] = ()       # processor ids removed from every pipeline (e.g. "cumulative_to_delta")
    exporter_token: str | None = None           # token the collector sends (None = the sink's real token)
    collector_running: bool = True              # False stops the collector (the "collector down mid-run" control)

    def with_changes(self, **changes: Any) -> StackSettings:
        return replace(self, **changes)


@runtime_checkable
class Stack(Protocol):
    """A running pipeline: Kong (or its simulator) -> collector -> fake Dynatrace sink."""

    name: str
    gateway_url: str                  # where requests enter (Kong proxy)
    sink: SinkClient                  # query and wait on what the fake Dynatrace received
    settings: StackSettings
    kong_deployment_name: str         # value the collector's attributes processor inserts

    def reconfigure(self, **changes: Any) -> None:
        """Apply changed settings (see :class:`StackSettings`) and wait until they are in effect."""

    def diagnose(self, dest: Path) -> Path:
        """Write everything a person needs to debug a failure into ``dest``; return the folder."""

    def close(self) -> None:
        """Tear the stack down (processes, clusters unless kept)."""


def summary_tail(urls: dict[str, str], sink_stats: Callable[[], object]) -> list[str]:
    """The end of every stack's diagnostic summary: its URLs and what the sink has counted."""
    lines = ["urls:", *(f"  {name}: {url}" for name, url in urls.items())]
    with contextlib.suppress(Exception):  # a summary is written when things are broken: the sink may be down or unset
        lines.append("sink stats: " + json.dumps(sink_stats()))
    return lines


def append_timing(workdir: Path, line: str) -> None:
    """One line into ``<workdir>/timings.txt`` (bring-up and build times a user can report)."""
    with (workdir / "timings.txt").open("a") as out:
        out.write(line + "\n")
