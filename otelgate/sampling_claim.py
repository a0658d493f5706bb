"""Claim 4, sampling: every proxied request is traced iff Kong's rule samples its trace id at the rate in force.

Kong's access log carries the trace id of every proxied request, sampled or not (see
:mod:`otelgate.expect.sampling`), so the claim needs no statistics: it reads each request's trace id from its access
log, asks the independent oracle (:mod:`otelgate.expect.kong_sampler`) for Kong's decision, and compares it with
whether that request's Kong root span reached the sink. The traced fraction with its 95% interval is reported as a
summary line only.

Traffic is sent in batches, one per rate (:func:`sweep`): each batch's requests are proxied while its rate is in
force, and all batches are then judged after ONE wait for the pipeline, so the suite pays the pipeline's delay once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from otelgate import claims
from otelgate.expect import kong_sampler
from otelgate.expect import logs as expect_logs
from otelgate.expect import sampling as expect_sampling
from otelgate.expect.errors import Evidence, ExpectationFailed
from otelgate.expect.kong_sampler import kong_decides
from otelgate.stacks.base import Stack
from otelgate.traffic import Traffic, checkpoint, send
from otelgate.waiting import WaitTimeout, poll_until

# Kong's span queue sends a batch at most max_coalescing_delay (default 1 s, Kong/kong@3.9.1
# kong/tools/queue_schema.lua:13-17) after its first entry; the collector batches for 200 ms more. A root span that
# has not arrived this long after every expected one did is not coming.
KONG_FLUSH_SECONDS = 1.2
# requests in flight at once: the decision is per trace id, so order and overlap do not matter to the claim
TRAFFIC_CONCURRENCY = 8
CRAFTED_SEED = 20261126
CRAFTED_COUNT = 100  # stratified ids: exactly rate * count are sampled; a 10% threshold shift moves at least one


def sampled_traceparents(trace_ids: Sequence[str]) -> list[dict[str, str]]:
    """One incoming W3C context per trace id, flagged sampled (Kong 3.8+ still runs its ratio sampler on it)."""
    return [{"traceparent": f"00-{tid}-{'1' * 16}-01"} for tid in trace_ids]


def crafted_ids(rate: float, count: int = CRAFTED_COUNT, seed: int = CRAFTED_SEED) -> tuple[list[str], int]:
    """``count`` stratified ids plus the three boundary ids of ``rate`` (one below, at, one above ``rate * 2^64``),
    and exactly how many of them Kong's rule samples (``round(rate * count) + 1``)."""
    boundary = kong_sampler.boundary_ids(rate)
    ids = [*expect_sampling.stratified_trace_ids(count, seed), boundary["below"], boundary["at"], boundary["above"]]
    return ids, expect_sampling.stratified_count(count, rate) + 1


@dataclass(frozen=True)
class Batch:
    """Requests proxied while ``rate`` was in force (with crafted ``trace_ids``, or Kong-generated ids)."""

    rate: float
    traffic: Traffic
    trace_ids: tuple[str, ...] | None = None
    expected_count: int | None = None

    @property
    def label(self) -> str:
        return f"rate {self.rate}, {'crafted' if self.trace_ids else 'Kong-generated'} ids"


def send_batch(stack: Stack, rate: float, requests: int, trace_ids: Sequence[str] | None = None,
               expected_count: int | None = None, url_path: str | None = None) -> Batch:
    """Send one batch through the gateway; ``rate`` must already be in force."""
    headers = None if trace_ids is None else sampled_traceparents(trace_ids)
    traffic = send(stack.gateway_url, url_path or claims.SAMPLING_ROUTE.path, requests, headers_per_request=headers,
                   concurrency=TRAFFIC_CONCURRENCY)
    claims.require_ok(traffic, requests)
    return Batch(rate, traffic, None if trace_ids is None else tuple(trace_ids), expected_count)


def wait_for_traced(stack: Stack, request_ids: Sequence[str], expected: set[str], since_ns: int) -> set[str]:
    """The ``request_ids`` whose Kong root reached the sink, once conclusive: every expected one arrived and nothing
    changed for :data:`KONG_FLUSH_SECONDS`, or nothing changed for ``settle``. A refusal of traces at the sink ends
    the wait at once (``SINK_REJECTIONS``)."""
    timing = claims.timing_of(stack)
    state: dict[str, Any] = {"seen": set(), "since": time.monotonic()}

    def observe() -> set[str]:
        rejected = claims.refused(stack, "traces", since_ns, "the sampling traffic")
        if rejected is not None:
            raise rejected
        seen = set(claims.kong_roots_of(stack, request_ids))
        if seen != state["seen"]:
            state["seen"], state["since"] = seen, time.monotonic()
        return seen

    def conclusive(seen: set[str]) -> bool:
        quiet = time.monotonic() - float(state["since"])
        return (expected <= seen and quiet >= KONG_FLUSH_SECONDS) or quiet >= timing.settle

    try:
        return poll_until(observe, conclusive, what="the sampled requests' Kong roots to settle",
                          timeout=timing.signal, interval=0.25, retry_on=(OSError, httpx.HTTPError))
    except WaitTimeout as exc:  # still changing after signal seconds: judge what arrived
        return set(exc.last) if isinstance(exc.last, set) else set()


def _trace_id_of(record: Mapping[str, Any]) -> str:
    return str(expect_logs.attribute(record, "trace_id") or record.get("trace_id") or "")


def judge(stack: Stack, batches: Sequence[Batch]) -> list[expect_sampling.DecisionReport | ExpectationFailed]:
    """One verdict per batch, after one wait for all of them: its report, or the failure (raised by the caller)."""
    every = Traffic(path=claims.SAMPLING_ROUTE.path, started_ns=min(b.traffic.started_ns for b in batches))
    every.request_ids = [rid for b in batches for rid in b.traffic.request_ids]
    records = claims.wait_for_access_logs(stack, every, "the sampling traffic")  # a timeout fails the claim
    logged = {expect_logs.request_id(r): r for r in records}
    plans: list[tuple[Batch, dict[str, str], set[str]] | ExpectationFailed] = []
    for batch in batches:
        try:
            plans.append(_plan(batch, [logged[rid] for rid in batch.traffic.request_ids if rid in logged]))
        except ExpectationFailed as failure:
            plans.append(failure)
    expected = set().union(*(plan[2] for plan in plans if isinstance(plan, tuple)))
    traced = wait_for_traced(stack, every.request_ids, expected, every.started_ns)
    return [plan if isinstance(plan, ExpectationFailed) else _verdict(plan[0], plan[1], traced) for plan in plans]


def _plan(batch: Batch, records: Sequence[Mapping[str, Any]]) -> tuple[Batch, dict[str, str], set[str]]:
    """The batch's trace ids (from its access logs, which must be complete and clean) and Kong's expected picks."""
    expect_logs.assert_one_record_per_request(records, batch.traffic.request_ids)
    expect_logs.assert_clean_trace_ids(records, min_records=len(batch.traffic.request_ids))
    by_request = {expect_logs.request_id(r): _trace_id_of(r) for r in records}
    if batch.trace_ids is not None:
        _assert_continued(batch.traffic, batch.trace_ids, by_request)
    parent = True if batch.trace_ids is not None else None
    return batch, by_request, {rid for rid, tid in by_request.items() if kong_decides(tid, batch.rate, parent)}


def _verdict(batch: Batch, by_request: Mapping[str, str],
             traced: set[str]) -> expect_sampling.DecisionReport | ExpectationFailed:
    parent = True if batch.trace_ids is not None else None
    decisions = [expect_sampling.Decision(rid, by_request[rid], rid in traced, parent)
                 for rid in batch.traffic.request_ids]
    try:
        report = expect_sampling.assert_decisions(decisions, batch.rate, min_requests=len(decisions),
                                                  expected_count=batch.expected_count)
    except ExpectationFailed as failure:
        return failure
    if batch.expected_count is not None and report.traced != batch.expected_count:
        return ExpectationFailed("SAMPLING_DECISION", f"{report.traced} crafted ids traced, exactly "
                                 f"{batch.expected_count} expected", str(report),
                                 Evidence(expected=batch.expected_count, seen=report.traced,
                                          facts={"rate": batch.rate}))
    return report


def _assert_continued(traffic: Traffic, trace_ids: Sequence[str], logged: Mapping[str, str]) -> None:
    """Kong continues an incoming W3C trace: the access log of request i names the trace id the client sent."""
    sent = dict(zip(traffic.request_ids, trace_ids, strict=False))
    wrong = [f"  request {rid}: sent {tid}, access log says {logged.get(rid)}" for rid, tid in sent.items()
             if logged.get(rid) != tid]
    if wrong:
        raise ExpectationFailed("TRACE_NOT_CONTINUED", f"{len(wrong)} of {len(sent)} requests' access logs do not "
                                "carry the trace id the client sent", "\n".join(wrong[:5]),
                                Evidence(expected=len(sent), seen=len(sent) - len(wrong)))


def _one(verdict: expect_sampling.DecisionReport | ExpectationFailed) -> expect_sampling.DecisionReport:
    if isinstance(verdict, ExpectationFailed):
        raise verdict
    return verdict


def check_sampling_decisions(stack: Stack, rate: float, requests: int = 100,
                             url_path: str | None = None, trace_ids: Sequence[str] | None = None,
                             expected_count: int | None = None) -> expect_sampling.DecisionReport:
    """At rate ``rate`` (already in force), each of ``requests`` requests is traced iff Kong's rule says so.

    Without ``trace_ids`` Kong makes up the ids; with them each request carries ``traceparent: 00-<id>-…-01`` and
    the access log must show Kong continued that id. ``expected_count`` pins the exact number Kong's rule samples.
    """
    batch = send_batch(stack, rate, requests, trace_ids, expected_count, url_path)
    return _one(judge(stack, [batch])[0])


def check_crafted_sampling(stack: Stack, rate: float, count: int = CRAFTED_COUNT,
                           seed: int = CRAFTED_SEED) -> expect_sampling.DecisionReport:
    """At ``rate`` (applied here, then restored), :func:`crafted_ids` are sampled exactly as Kong's rule says, in
    exactly the number it gives (±0)."""
    ids, exact = crafted_ids(rate, count, seed)
    with claims.applied(stack, sampling_rate=rate):
        return check_sampling_decisions(stack, rate, len(ids), trace_ids=ids, expected_count=exact)


@dataclass(frozen=True)
class Planned:
    """One batch of a sweep: ``generated`` Kong-generated requests and, if ``crafted``, the crafted ids."""

    rate: float
    generated: int
    crafted: bool = False


def sweep(stack: Stack, plan: Sequence[Planned]) -> dict[tuple[float, str],
                                                         expect_sampling.DecisionReport | ExpectationFailed]:
    """Send every planned batch at its rate (the rate is restored afterwards), then judge them all after one wait.

    Keys are ``(rate, "generated" | "crafted")``; values the batch's report, or its failure to raise."""
    before = stack.settings.sampling_rate
    batches: list[tuple[tuple[float, str], Batch]] = []
    try:
        for item in plan:
            stack.reconfigure(sampling_rate=item.rate)
            if item.generated:
                batches.append(((item.rate, "generated"), send_batch(stack, item.rate, item.generated)))
            if item.crafted:
                ids, exact = crafted_ids(item.rate)
                batches.append(((item.rate, "crafted"), send_batch(stack, item.rate, len(ids), ids, exact)))
    finally:
        checkpoint()
        stack.reconfigure(sampling_rate=before)
    verdicts = judge(stack, [batch for _, batch in batches])
    return {key: verdict for (key, _), verdict in zip(batches, verdicts, strict=True)}
