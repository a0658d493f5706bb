"""The claims' decisions on recorded sink contents (a fake stack, no processes): conclusive evidence ends a check
early with its cause, and nothing is skipped silently (the log-to-trace join, the access logs of sampling traffic)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from otelgate import claims, sampling_claim
from otelgate.expect import kong_sampler
from otelgate.expect.errors import ExpectationFailed
from otelgate.stacks.base import StackSettings
from otelgate.traffic import Traffic

FAST = claims.Timing(signal=2.0, settle=0.6, scrape=2.0, down=0.2)


@dataclass
class FakeSink:
    span_records: list[dict[str, Any]] = field(default_factory=list)
    log_records: list[dict[str, Any]] = field(default_factory=list)
    rejection_records: list[dict[str, Any]] = field(default_factory=list)

    def spans(self, **filters: Any) -> list[dict[str, Any]]:
        return [s for s in self.span_records if all(s.get(k) == v for k, v in filters.items())]

    def logs(self) -> list[dict[str, Any]]:
        return list(self.log_records)

    def rejections(self, signal: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.rejection_records if signal in (None, r["signal"])]

    def stats(self) -> dict[str, Any]:
        return {"spans": len(self.span_records), "logs": len(self.log_records)}

    def metric_points(self, name: str | None = None) -> list[dict[str, Any]]:
        return []


@dataclass
class FakeStack:
    sink: FakeSink
    settings: StackSettings = field(default_factory=StackSettings)
    name: str = "fake"
    gateway_url: str = "http://gateway.invalid"
    kong_deployment_name: str = "kong-fake"
    timing: claims.Timing = FAST

    def reconfigure(self, **changes: Any) -> None:
        self.settings = self.settings.with_changes(**changes)

    def urls(self) -> dict[str, str]:
        return {}


def access_log(request_id: str, trace_id: str, sampled: bool | None) -> dict[str, Any]:
    headers = {} if sampled is None else {"traceparent": f"00-{trace_id}-{'1' * 16}-{'01' if sampled else '00'}"}
    return {"attributes": {"request": {"id": request_id, "uri": "/x", "headers": headers}, "started_at": 1,
                           "trace_id": trace_id}, "trace_id": trace_id}


def kong_root(request_id: str, trace_id: str) -> dict[str, Any]:
    return {"trace_id": trace_id, "span_id": "a" * 16, "parent_span_id": "", "service_name": claims.KONG_SERVICE,
            "name": "kong", "kind": "SERVER", "start_unix_nano": 0, "end_unix_nano": 1,
            "attributes": {"kong.request.id": request_id}}


def fake_send(request_ids: Sequence[str]) -> Callable[..., Traffic]:
    def send(gateway_url: str, path: str, count: int = 1, **_: Any) -> Traffic:
        traffic = Traffic(path=path, started_ns=time.time_ns())
        traffic.request_ids = list(request_ids[:count])
        traffic.statuses = [200] * count
        traffic.ended_ns = time.time_ns()
        return traffic

    return send


def trace_ids(count: int, seed: int) -> list[str]:
    generator = random.Random(seed)
    return [f"{generator.getrandbits(128):032x}" for _ in range(count)]


def test_the_log_join_must_run_when_the_rate_is_above_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"r{i}" for i in range(3)]
    sink = FakeSink(log_records=[access_log(r, t, sampled=False) for r, t in zip(ids, trace_ids(3, 1), strict=True)])
    monkeypatch.setattr(claims, "send", fake_send(ids))
    stack = FakeStack(sink, StackSettings(sampling_rate=0.5))
    with pytest.raises(ExpectationFailed) as err:
        claims.check_access_logs(stack, requests=3)  # type: ignore[arg-type]
    assert err.value.cause == "JOIN_NOT_RUN" and err.value.evidence.facts["rate_in_force"] == 0.5
    stack.settings = StackSettings(sampling_rate=0.0)  # at rate 0 there is nothing to join: the claim holds
    assert len(claims.check_access_logs(stack, requests=3)) == 3  # type: ignore[arg-type]


def test_a_trace_kong_did_not_sample_is_concluded_at_once_from_its_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FakeSink(log_records=[access_log("r0", trace_ids(1, 2)[0], sampled=False)])
    monkeypatch.setattr(claims, "send", fake_send(["r0"]))
    began = time.monotonic()
    with pytest.raises(ExpectationFailed) as err:
        claims.check_trace_spans_services(FakeStack(sink))  # type: ignore[arg-type]
    assert err.value.cause == "NOT_SAMPLED" and err.value.evidence.facts["access_log_arrived"] is True
    assert time.monotonic() - began < 1.0, "a conclusive access log must end the wait, not the timeout"


def test_a_refusal_at_the_sink_ends_the_trace_check_with_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FakeSink(rejection_records=[{"signal": "traces", "http_status": 401, "reason": "UNAUTHENTICATED",
                                        "message": "Token Authentication failed", "at": time.time() + 1}])
    monkeypatch.setattr(claims, "send", fake_send(["r0"]))
    with pytest.raises(ExpectationFailed) as err:
        claims.check_trace_spans_services(FakeStack(sink))  # type: ignore[arg-type]
    assert err.value.cause == "SINK_REJECTIONS"
    assert [(r.http_status, r.message) for r in err.value.evidence.rejections] == [(401, "Token Authentication failed")]


def test_no_evidence_at_all_is_no_trace_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "send", fake_send(["r0"]))
    with pytest.raises(ExpectationFailed) as err:
        claims.check_trace_spans_services(FakeStack(FakeSink()))  # type: ignore[arg-type]
    assert err.value.cause == "NO_TRACE" and err.value.evidence.facts["access_log_arrived"] is False


def test_missing_access_logs_fail_the_sampling_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"r{i}" for i in range(20)]
    monkeypatch.setattr(sampling_claim, "send", fake_send(ids))
    with pytest.raises(ExpectationFailed) as err:
        sampling_claim.check_sampling_decisions(FakeStack(FakeSink()), 0.5, 20)  # type: ignore[arg-type]
    assert err.value.cause == "NO_LOGS" and err.value.evidence.expected == 20 and err.value.evidence.seen == 0


def recorded_stack(rate: float, decide: Callable[[str, float], bool], count: int = 60) -> tuple[FakeStack, list[str]]:
    ids = [f"r{i}" for i in range(count)]
    tids = trace_ids(count, 3)
    sink = FakeSink(log_records=[access_log(r, t, None) for r, t in zip(ids, tids, strict=True)],
                    span_records=[kong_root(r, t) for r, t in zip(ids, tids, strict=True) if decide(t, rate)])
    return FakeStack(sink, StackSettings(sampling_rate=rate)), ids


def test_the_sampling_claim_passes_kong_s_decisions_and_names_the_mismatches_of_a_wrong_sampler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stack, ids = recorded_stack(0.5, kong_sampler.kong_decides)
    monkeypatch.setattr(sampling_claim, "send", fake_send(ids))
    report = sampling_claim.check_sampling_decisions(stack, 0.5, len(ids))  # type: ignore[arg-type]
    assert report.traced == report.expected_traced > 0

    def inverted(tid: str, rate: float) -> bool:
        return kong_sampler.trace_id_head(tid) >= (1 - rate) * 2**64

    stack, ids = recorded_stack(0.5, inverted)
    with pytest.raises(ExpectationFailed) as err:
        sampling_claim.check_sampling_decisions(stack, 0.5, len(ids))  # type: ignore[arg-type]
    assert err.value.cause == "SAMPLING_DECISION"
    first = err.value.evidence.facts["first_mismatched_trace_ids"][0]
    assert first in err.value.details and "at rate 0.5" in err.value.details
