"""Sampling: every request's decision checked against Kong's rule (exact, no statistics), and the traced fraction
with a 95% Wilson interval as a summary line (and for the load sweep, where ids are not known in advance).

Kong's decision is a function of the trace id (:mod:`otelgate.expect.kong_sampler`, the independent oracle), and
Kong's access log carries the trace id of every proxied request, sampled or not (Kong/kong@3.9.1
kong/observability/tracing/propagation/init.lua:214-217 sets the serializer's ``trace_id`` whenever it injects, before
and regardless of the sampling decision). So for each request the expected decision is known and checked.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from otelgate.expect import kong_sampler
from otelgate.expect.errors import Evidence, ExpectationFailed, NotEnoughData

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Fraction:
    traced: int
    sent: int
    low: float
    high: float

    @property
    def observed(self) -> float:
        return self.traced / self.sent if self.sent else float("nan")

    def contains(self, rate: float) -> bool:
        return self.low <= rate <= self.high

    def __str__(self) -> str:
        return f"{self.traced}/{self.sent} = {self.observed:.4f} (95% CI [{self.low:.4f}, {self.high:.4f}])"


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0 and 1, unlike the normal interval)."""
    if trials <= 0:
        raise ValueError("trials must be positive")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} outside [0, {trials}]")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)    # exact bounds at the edges (no rounding residue)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def traced_fraction(traced: int, sent: int) -> Fraction:
    low, high = wilson_interval(traced, sent)
    return Fraction(traced, sent, low, high)


def assert_rate(traced: int, sent: int, rate: float, min_sent: int = 20) -> Fraction:
    """Exact at rate 0 and 1; otherwise ``rate`` must lie inside the 95% interval of the observed fraction.

    A statistical check, for traffic whose trace ids are unknown (the load sweep). Where every request's trace id is
    known, :func:`assert_decisions` is exact and replaces it."""
    if sent < min_sent:
        raise NotEnoughData("requests for a sampling estimate", min_sent, sent)
    fraction = traced_fraction(traced, sent)
    if rate >= 1 and traced != sent:
        raise ExpectationFailed("SAMPLING_RATE", f"rate 1: every request must be traced; {fraction}")
    if rate <= 0 and traced != 0:
        raise ExpectationFailed("SAMPLING_RATE", f"rate 0: no request may be traced; {fraction}")
    if 0 < rate < 1 and not fraction.contains(rate):
        raise ExpectationFailed("SAMPLING_RATE", f"configured rate {rate} outside the observed {fraction}")
    return fraction


@dataclass(frozen=True)
class Decision:
    """One proxied request: the trace id in its access log, and whether its Kong root span reached the sink."""

    request_id: str
    trace_id: str
    traced: bool
    parent_sampled: bool | None = None    # the incoming context's flag, when the client sent one


@dataclass(frozen=True)
class DecisionReport:
    rate: float
    requests: int
    expected_traced: int
    traced: int
    summary: Fraction

    def __str__(self) -> str:
        return (f"rate {self.rate}: {self.traced} of {self.requests} traced, Kong's rule says {self.expected_traced}; "
                f"observed fraction {self.summary}")


def _describe_mismatch(decision: Decision, expected: bool, rate: float) -> str:
    head = kong_sampler.trace_id_head(decision.trace_id)
    return (f"  request {decision.request_id} trace_id {decision.trace_id} head 0x{head:016x} "
            f"(fraction {head / kong_sampler.HEAD_RANGE:.6f}) at rate {rate}: Kong's rule says "
            f"{'sampled' if expected else 'not sampled'}, observed {'traced' if decision.traced else 'not traced'}")


def assert_decisions(decisions: Sequence[Decision], rate: float, min_requests: int = 1,
                     expected_count: int | None = None) -> DecisionReport:
    """Each request is traced iff Kong's rule samples its trace id at ``rate``; the first mismatches are the evidence.

    ``expected_count`` (crafted ids) additionally pins the number Kong's rule must give, so a wrong id set fails too.
    """
    if len(decisions) < min_requests:
        raise NotEnoughData("requests with an access-log trace id", min_requests, len(decisions))
    expected = [kong_sampler.kong_decides(d.trace_id, rate, d.parent_sampled) for d in decisions]
    wrong = [(d, e) for d, e in zip(decisions, expected, strict=True) if d.traced != e]
    report = DecisionReport(rate, len(decisions), sum(expected), sum(d.traced for d in decisions),
                            traced_fraction(sum(d.traced for d in decisions), len(decisions)))
    if wrong:
        unexpected = sum(1 for d, _ in wrong if d.traced)
        raise ExpectationFailed(
            "SAMPLING_DECISION",
            f"{len(wrong)} of {len(decisions)} requests decided unlike Kong's rule at rate {rate} "
            f"({unexpected} traced that Kong would not sample, {len(wrong) - unexpected} not traced that it would)",
            "\n".join([_describe_mismatch(d, e, rate) for d, e in wrong[:5]] + [f"  summary: {report}"]),
            Evidence(expected=report.expected_traced, seen=report.traced,
                     facts={"rate": rate, "mismatches": len(wrong),
                            "first_mismatched_trace_ids": [d.trace_id for d, _ in wrong[:5]]}))
    if expected_count is not None and report.expected_traced != expected_count:
        raise ExpectationFailed("SAMPLING_DECISION", f"Kong's rule samples {report.expected_traced} of these ids at "
                                f"rate {rate}, the crafted set promises exactly {expected_count}",
                                str(report), Evidence(expected=expected_count, seen=report.traced,
                                                      facts={"rate": rate}))
    return report


def stratified_trace_ids(count: int, seed: int) -> list[str]:
    """``count`` trace ids whose heads are spread evenly over Kong's sampling range, in a seeded random order.

    Id ``i`` sits at fraction ``(i + 0.5) / count``, so Kong's rule keeps exactly :func:`stratified_count` of them at
    any rate: the count is known in advance, and a sampler that ignores the rate, inverts it, reads the wrong bytes
    or shifts the threshold by a few percent decides some of them differently.
    """
    if count <= 0:
        raise ValueError("count must be positive")
    generator = random.Random(seed)
    heads = [(2 * index + 1) * kong_sampler.HEAD_RANGE // (2 * count) for index in range(count)]
    generator.shuffle(heads)
    return [kong_sampler.trace_id_for_head(h, tail=f"{generator.getrandbits(64):016x}") for h in heads]


def stratified_count(count: int, rate: float) -> int:
    """How many of ``stratified_trace_ids(count)`` Kong samples at ``rate`` (those with (i+0.5)/count < rate)."""
    if rate >= 1:
        return count
    if rate <= 0:
        return 0
    return sum(1 for index in range(count) if (2 * index + 1) * kong_sampler.HEAD_RANGE // (2 * count)
               < kong_sampler.threshold(rate))
