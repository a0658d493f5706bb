"""Sink configuration: the two profiles and the switches for behaviour that is unverified on real Dynatrace."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

ProfileName = Literal["dynatrace", "otlp"]
PROFILES: tuple[str, ...] = ("dynatrace", "otlp")

MB = 1024 * 1024
# Dynatrace access limits, uncompressed (docs/reference/dynatrace-otlp.md#size-limits)
DYNATRACE_SIZE_LIMITS: Mapping[str, int] = {"traces": 8 * MB, "metrics": 4 * MB, "logs": 2 * MB}
# the OTLP spec recommends a 64 MiB cap after decompression
# (docs/reference/dynatrace-otlp.md#otlphttp-protocol-rules, rule 4)
OTLP_SIZE_LIMITS: Mapping[str, int] = {"traces": 64 * MB, "metrics": 64 * MB, "logs": 64 * MB}

# scopes an Api-Token needs per signal (case-sensitive)
SIGNAL_SCOPES: Mapping[str, str] = {
    "traces": "openTelemetryTrace.ingest",
    "metrics": "metrics.ingest",
    "logs": "logs.ingest",
}

DEFAULT_MAX_ITEMS = 100_000


@dataclass(frozen=True)
class SinkConfig:
    """Everything that decides how the sink answers. ``token`` never appears in a repr, log or dump."""

    profile: ProfileName = "dynatrace"
    token: str | None = field(default=None, repr=False)
    # scopes the configured token carries; None = all three ingest scopes
    token_scopes: frozenset[str] | None = None
    # "platform token" mode: also accept `Authorization: Bearer <token>`
    allow_bearer: bool = False
    # per-signal cap on the decompressed body (and on the raw body); None = the profile's defaults
    size_limits: Mapping[str, int] | None = None
    # store cap per signal (spans, metric points, log records) and for rejection records
    max_items: int = DEFAULT_MAX_ITEMS
    # metrics requests with more than this many points are dropped as a whole
    max_data_points: int = 15_000
    # how a too-many-points request is answered: HTTP 413, or 200 with every point rejected via partial_success
    too_many_points: Literal["413", "partial_success"] = "413"
    max_dimensions: int = 50
    max_log_records: int = 50_000
    # span end time must lie in [now - span_past_seconds, now + span_future_seconds]
    span_past_seconds: float = 60 * 60
    span_future_seconds: float = 10 * 60
    # logs older than this are dropped; logs further in the future are clamped to now
    log_past_seconds: float = 24 * 60 * 60
    log_future_seconds: float = 10 * 60
    # whether dropped spans / log records are reported in partial_success (unknown for real Dynatrace)
    report_dropped_spans: bool = False
    report_dropped_logs: bool = False
    # decode worker processes for large trace bodies (0 = decode in the event loop); see otelgate/sink/workers.py
    workers: int = 0

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown sink profile {self.profile!r}; choose one of {', '.join(PROFILES)}")
        if self.profile == "dynatrace" and not self.token:
            raise ValueError(
                "the dynatrace profile needs an API token (Authorization: Api-Token <token>); "
                "pass token=... or use profile='otlp' for an unauthenticated plain OTLP sink"
            )
        if self.max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {self.max_items}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.too_many_points not in ("413", "partial_success"):
            raise ValueError(f"too_many_points must be '413' or 'partial_success', got {self.too_many_points!r}")

    @property
    def is_dynatrace(self) -> bool:
        return self.profile == "dynatrace"

    @property
    def ingest_prefix(self) -> str:
        return "/api/v2/otlp" if self.is_dynatrace else ""

    @property
    def accepted_content_types(self) -> Collection[str]:
        return ("application/x-protobuf",) if self.is_dynatrace else ("application/x-protobuf", "application/json")

    def size_limit(self, signal: str) -> int:
        limits = self.size_limits or (DYNATRACE_SIZE_LIMITS if self.is_dynatrace else OTLP_SIZE_LIMITS)
        return int(limits[signal])

    def has_scope(self, signal: str) -> bool:
        return self.token_scopes is None or SIGNAL_SCOPES[signal] in self.token_scopes

    def public_view(self) -> dict[str, object]:
        """The settings as JSON, with the token reduced to whether one is set."""
        view = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "token"}
        view["token"] = "<set>" if self.token else None
        view["token_scopes"] = sorted(self.token_scopes) if self.token_scopes is not None else None
        view["size_limits"] = {s: self.size_limit(s) for s in ("traces", "metrics", "logs")}
        return view
