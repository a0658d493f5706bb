"""The interfaces of the stacks: :class:`Stack` (what the suites see; they never know where the pipeline runs) and
:class:`StackModule` (what ``otelgate up`` and the pytest plugin call to plan, check and start one)."""

from __future__ import annotations

import contextlib
import json
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
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
    # Keys deep-merged into every otlp_http exporter, e.g. {"retry_on_failure": {"enabled": False}} (resilience)
    exporter_settings: dict[str, Any] = field(default_factory=dict)
    # Whole manifest files used instead of the manifests folder's (otelgate mutate applies one mutant each)
    kong_yaml: Path | None = None               # kong.yaml: Kong config reload
    collector_yaml: Path | None = None          # otel/collector.yaml: collector restart
    instrumentation_yaml: Path | None = None    # otel/instrumentation.yaml: the instrumented services restart

    def with_changes(self, **changes: Any) -> StackSettings:
        """These settings with ``changes`` applied; an unknown name is a ValueError that lists the known ones."""
        known = {f.name for f in fields(self)}
        if unknown := set(changes) - known:
            raise ValueError(f"unknown stack settings {sorted(unknown)}; known: {sorted(known)}")
        return replace(self, **changes)

    def differs_in(self, other: StackSettings) -> frozenset[str]:
        """The names of the settings whose value is different in ``other``."""
        return frozenset(f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name))

    def kong_plugin_overrides(self) -> dict[str, dict[str, Any]]:
        """What these settings change in kong.yaml's plugins (``kongconfig.derive_kong_config(plugin_overrides=)``):
        :attr:`kong_plugin_config`, plus :attr:`sampling_rate` as the opentelemetry plugin's ``sampling_rate``."""
        overrides = {name: dict(keys) for name, keys in self.kong_plugin_config.items()}
        if self.sampling_rate is not None:
            overrides.setdefault("opentelemetry", {})["sampling_rate"] = self.sampling_rate
        return overrides


# Keys of a stack's ``urls()`` that tools read (otelgate.probe, the load sweep): one spelling on every stack
URL_COLLECTOR_HEALTH = "collector health"
URL_COLLECTOR_METRICS = "collector own metrics"     # the collector's service.telemetry Prometheus endpoint

# Which settings each part of a stack applies: Kong's declarative config (a reload), kong.conf (a new Kong), the
# collector (a new collector).
KONG_SIDE = frozenset({"sampling_rate", "kong_plugin_config"})
KONG_RESTART = frozenset({"tracing_sampling_rate"})
COLLECTOR_SIDE = frozenset({"drop_processors", "exporter_token", "collector_running", "exporter_settings"})
# Whole-file replacements (see the fields above); a stack that cannot apply them must refuse them
MANIFEST_FILES = frozenset({"kong_yaml", "collector_yaml", "instrumentation_yaml"})


@runtime_checkable
class Stack(Protocol):
    """A running pipeline: Kong (or its simulator) -> collector -> fake Dynatrace sink."""

    name: str
    gateway_url: str                  # where requests enter (Kong proxy)
    settings: StackSettings
    kong_deployment_name: str         # value the collector's attributes processor inserts

    @property
    def sink(self) -> SinkClient:
        """Query and wait on what the fake Dynatrace received."""

    def reconfigure(self, **changes: Any) -> None:
        """Apply changed settings (see :class:`StackSettings`) and wait until they are in effect."""

    def diagnose(self, dest: Path) -> Path:
        """Write everything a person needs to debug a failure into ``dest``; return the folder."""

    def close(self) -> None:
        """Tear the stack down (processes, clusters unless kept)."""


class StackStartError(RuntimeError):
    """A stack could not be brought up (or cannot start here); the message says which step, what it waited for,
    what it saw last, and where the diagnostics are. Whatever the failed bring-up had started is stopped."""


@dataclass(frozen=True)
class StackOptions:
    """What a person (``otelgate up``) or a test session (the pytest plugin) asks of a stack, the same for every
    stack. ``None`` means the stack's default (its ``OTELGATE_*`` environment variable, then its built-in value)."""

    settings: StackSettings = field(default_factory=StackSettings)
    workdir: Path | None = None         # logs, derived configs and diagnostics of this run
    keep: bool = False                  # leave it running after close (containers; cluster and addons)
    manifests: Path | None = None       # the deployment to bring up (None: the demo otelgate ships)
    cluster_name: str | None = None     # kind: the cluster's name
    kubeconfig: Path | None = None      # external: the cluster to deploy into
    sink_image: str | None = None       # docker, kind, external: a built sink image to use instead of building one


def manifests_problem(options: StackOptions, loaded_from: Path) -> str | None:
    """Why ``options.manifests`` cannot be used by a stack module that read its manifests folder (``loaded_from``)
    when it was imported, or None. ``otelgate --manifests`` and the pytest plugin's option set the folder before
    any stack module is imported; a caller that imported one first cannot switch folders in the same process."""
    if options.manifests is None or Path(options.manifests).resolve() == loaded_from.resolve():
        return None
    return (f"the stacks in this process read their manifests from {loaded_from} when they were imported; they cannot "
            f"switch to {options.manifests}. Set OTELGATE_MANIFESTS={options.manifests} (or pass --manifests / "
            "--otelgate-manifests) before otelgate.stacks is imported")


@runtime_checkable
class StackModule(Protocol):
    """What each stack offers its front ends; one object per stack, listed in :mod:`otelgate.stacks.registry`."""

    @property
    def name(self) -> str:
        """What ``--stack`` calls it."""
        ...

    def plan(self, options: StackOptions) -> list[str]:
        """What :meth:`start` would do, in order, one line each (``otelgate up --dry-run``); starts nothing."""
        ...

    def check_prerequisites(self, options: StackOptions) -> list[str]:
        """What would stop :meth:`start` here, one problem a line with what to do about it; empty: it can start."""
        ...

    def start(self, options: StackOptions) -> Stack:
        """Bring the stack up and wait until it serves; raise :class:`StackStartError` (after stopping what it
        started) when it cannot."""
        ...

    def up(self, options: StackOptions, status_interval: float) -> int:
        """``otelgate up``: start, print the URLs, then a status line every ``status_interval`` seconds until
        Ctrl-C or SIGTERM; stop (unless ``options.keep``) and return the exit code."""
        ...


def generate_token() -> str:
    """A fresh token in Dynatrace's API-token shape (``dt0c01.<24>.<64>``) for a stack's sink and collector. Never
    printed or written unredacted (:func:`otelgate.redact.redact`)."""
    alphabet = string.ascii_uppercase + string.digits

    def part(n: int) -> str:
        return "".join(secrets.choice(alphabet) for _ in range(n))

    return f"dt0c01.{part(24)}.{part(64)}"


def summary_tail(urls: dict[str, str], sink_stats: Callable[[], object]) -> list[str]:
    """The end of every stack's diagnostic summary: its URLs and what the sink has counted."""
    lines = ["urls:", *(f"  {name}: {url}" for name, url in urls.items())]
    with contextlib.suppress(Exception):  # a summary is written when things are broken: the sink may be down or unset
        lines.append("sink stats: " + json.dumps(sink_stats()))
    return lines


def write_sink_dump(dest: Path, sink: Callable[[], SinkClient], *secrets: str | None) -> None:
    """``<dest>/sink-dump.json`` (what the fake Dynatrace stored; ``otelgate report``/``replay`` read it), secrets
    redacted; when the sink cannot answer, ``sink-dump.error.txt`` says why instead."""
    from otelgate.redact import redact

    try:
        (dest / "sink-dump.json").write_text(redact(json.dumps(sink().dump(), indent=1), *secrets))
    except Exception as exc:  # diagnostics are written when things are broken: the sink may be down or unset
        (dest / "sink-dump.error.txt").write_text(f"could not fetch the sink dump: {exc!r}\n")


def append_timing(workdir: Path, line: str) -> None:
    """One line into ``<workdir>/timings.txt`` (bring-up and build times a user can report)."""
    with (workdir / "timings.txt").open("a") as out:
        out.write(line + "\n")


@dataclass(frozen=True)
class StackEntry:
    """A :class:`StackModule` made of a stack's own functions, each called only after
    :func:`manifests_problem` found the manifests folder the one the stack's module loaded."""

    name: str
    loaded_from: Path
    plan_lines: Callable[[StackOptions], list[str]]
    problems: Callable[[StackOptions], list[str]]
    bring_up: Callable[[StackOptions], Stack]
    serve: Callable[[StackOptions, float], int]

    def _require_manifests(self, options: StackOptions) -> None:
        problem = manifests_problem(options, self.loaded_from)
        if problem:
            raise StackStartError(problem)

    def plan(self, options: StackOptions) -> list[str]:
        self._require_manifests(options)
        return self.plan_lines(options)

    def check_prerequisites(self, options: StackOptions) -> list[str]:
        problem = manifests_problem(options, self.loaded_from)
        return [problem] if problem else self.problems(options)

    def start(self, options: StackOptions) -> Stack:
        self._require_manifests(options)
        return self.bring_up(options)

    def up(self, options: StackOptions, status_interval: float) -> int:
        self._require_manifests(options)
        return self.serve(options, status_interval)
