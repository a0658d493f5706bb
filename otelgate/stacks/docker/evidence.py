"""What proves the docker stack works: the canary (a request whose trace Kong samples at any rate above 0) and the
lines Kong logs when a declarative reload was applied or failed."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from otelgate.stacks.docker.specs import TOPOLOGY
from otelgate.waiting import poll_until

if TYPE_CHECKING:
    from otelgate.sink.client import SinkClient

# Kong's runloop logs this (level info) on every worker once a declarative reload is applied
# (kong/runloop/events.lua reconfigure_handler); it is the evidence that POST /config took effect.
RECONFIGURE_DONE = "declarative reconfigure took"
RECONFIGURE_FAILED = "declarative reconfigure failed"


class KongReloadFailed(Exception):
    """Kong logged that applying a declarative config failed."""


@dataclass(frozen=True)
class ReloadEvidence:
    """How many reloads Kong's error log showed before a ``POST /config``; what came after is the new one."""

    done: int
    failed: int

    @classmethod
    def of(cls, error_log: str) -> ReloadEvidence:
        return cls(error_log.count(RECONFIGURE_DONE), error_log.count(RECONFIGURE_FAILED))

    def workers_applied(self, error_log: str) -> int:
        """Workers that applied a reload since; raises :class:`KongReloadFailed` if one failed."""
        if error_log.count(RECONFIGURE_FAILED) > self.failed:
            failure = [line for line in error_log.splitlines() if RECONFIGURE_FAILED in line][-1]
            raise KongReloadFailed(f"Kong could not apply the new declarative config: {failure.strip()}")
        return error_log.count(RECONFIGURE_DONE) - self.done


def worker_count(kong_env: Mapping[str, str]) -> int:
    value = kong_env.get("KONG_NGINX_WORKER_PROCESSES", "1")
    if not value.isdigit():
        raise ValueError(f"KONG_NGINX_WORKER_PROCESSES={value!r}: reconfigure() needs a fixed worker count")
    return int(value)


def canary_traceparent() -> tuple[str, str]:
    """``(trace_id, traceparent)`` with the trace id's first 8 bytes zero: Kong's ratio sampler reads them as a
    uint64 and samples iff it is below ``rate * 2**64`` (kong/pdk/tracing.lua), so this id is sampled at every rate
    above 0. The flag ``01`` does not force sampling in Kong 3.8+; ``00`` would force it off."""
    tail = secrets.token_hex(8)
    while int(tail, 16) == 0:
        tail = secrets.token_hex(8)
    trace_id = "0" * 16 + tail
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def wait_canary_root(sink: SinkClient, trace_id: str, timeout: float) -> None:
    """Ready: Kong's span of the canary's trace is in the sink (the pipeline carries data). Whether the whole path
    joins that trace is the trace claim's verdict, not readiness."""
    kong = TOPOLOGY.kong_service_name
    poll_until(lambda: sink.spans(trace_id=trace_id, service=kong), bool,
               what=f"the {kong} span of the canary's trace {trace_id}", timeout=timeout, interval=0.2)


def canary_services(sink: SinkClient, trace_id: str, timeout: float) -> str:
    """The services seen in the canary's trace after a short bounded wait for the whole declared path (so its late
    spans do not land after the sink's reset); for the summary, never a reason to fail the bring-up."""
    wanted, seen = set(TOPOLOGY.canary.service_path), set[str]()

    def services_in_trace() -> set[str]:
        seen.update(str(s.get("service_name")) for s in sink.spans(trace_id=trace_id))
        return seen

    with contextlib.suppress(AssertionError):
        poll_until(services_in_trace, lambda found: wanted <= found, what=f"the canary trace {trace_id}",
                   timeout=timeout, interval=0.2)
    missing = sorted(wanted - seen)
    return f"services {', '.join(sorted(seen))}" + (f"; missing {', '.join(missing)}" if missing else "")
