"""Claim 4, sampling: every proxied request is traced iff Kong's rule samples its trace id at the rate in force.

Kong's access log carries the trace id of every proxied request, sampled or not (see
:mod:`otelgate.expect.sampling`), so the claim needs no statistics: it reads each request's trace id from its access
log, asks the independent oracle (:mod:`otelgate.expect.kong_sampler`) for Kong's decision, and compares it with
whether that request's Kong root span reached the sink. The traced fraction with its 95% interval is reported as a
summary line only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from otelgate import claims
from otelgate.expect import kong_sampler
from otelgate.expect import logs as expect_logs
from otelgate.expect import sampling as expect_sampling
from otelgate.expect.errors import Evidence, ExpectationFailed
from otelgate.expect.kong_sampler import kong_decides
from otelgate.stacks.base import Stack
from otelgate.traffic import Traffic, send
from otelgate.waiting import WaitTimeout, poll_until

# Kong's span queue sends a batch at most max_coalescing_delay (default 1 s, Kong/kong@3.9.1
# kong/tools/queue_schema.lua:13-17) after its first entry; the collector batches for 200 ms more. A root span that
# has not arrived this long after every expected one did is not coming.
KONG_FLUSH_SECONDS = 1.5


def sampled_traceparents(trace_ids: Sequence[str]) -> list[dict[str, str]]:
    """One incoming W3C context per trace id, flagged sampled (Kong 3.8+ still runs its ratio sampler on it)."""
    return [{"traceparent": f"00-{tid}-{'1' * 16}-01"} for tid in trace_ids]


def wait_for_traced(stack: Stack, traffic: Traffic, expected: set[str]) -> set[str]:
    """The request ids of ``traffic`` whose Kong root reached the sink, once conclusive: every expected one arrived
    and nothing changed for :data:`KONG_FLUSH_SECONDS`, or nothing changed for ``settle``. A refusal of traces at
    the sink ends the wait at once (``SINK_REJECTIONS``)."""
    timing = claims.timing_of(stack)
    state: dict[str, Any] = {"seen": set(), "since": time.monotonic()}

    def observe() -> set[str]:
        rejected = claims.refused(stack, "traces", traffic.started_ns, "the sampling traffic")
        if rejected is not None:
            raise rejected
        seen = set(claims.kong_roots_of(stack, traffic.request_ids))
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


def check_sampling_decisions(stack: Stack, rate: float, requests: int = 200,
                             url_path: str = claims.SAMPLING_ROUTE.path, trace_ids: Sequence[str] | None = None,
                             expected_count: int | None = None) -> expect_sampling.DecisionReport:
    """At rate ``rate`` (already in force), each of ``requests`` requests is traced iff Kong's rule says so.

    Without ``trace_ids`` Kong makes up the ids; with them each request carries ``traceparent: 00-<id>-…-01`` and
    the access log must show Kong continued that id. ``expected_count`` pins the exact number Kong's rule samples.
    """
    headers = None if trace_ids is None else sampled_traceparents(trace_ids)
    traffic = send(stack.gateway_url, url_path, requests, headers_per_request=headers)
    claims.require_ok(traffic, requests)
    records = claims.wait_for_access_logs(stack, traffic, f"the sampling traffic at rate {rate}")
    expect_logs.assert_one_record_per_request(records, traffic.request_ids)
    expect_logs.assert_clean_trace_ids(records, min_records=requests)  # the decision is read from these ids
    by_request = {expect_logs.request_id(r): _trace_id_of(r) for r in records}
    if trace_ids is not None:
        _assert_continued(traffic, trace_ids, by_request)
    parent = True if trace_ids is not None else None
    expected = {rid for rid, tid in by_request.items() if kong_decides(tid, rate, parent)}
    traced = wait_for_traced(stack, traffic, expected)
    decisions = [expect_sampling.Decision(rid, by_request[rid], rid in traced, parent) for rid in traffic.request_ids]
    return expect_sampling.assert_decisions(decisions, rate, min_requests=requests, expected_count=expected_count)


def _assert_continued(traffic: Traffic, trace_ids: Sequence[str], logged: Mapping[str, str]) -> None:
    """Kong continues an incoming W3C trace: the access log of request i names the trace id the client sent."""
    sent = dict(zip(traffic.request_ids, trace_ids, strict=False))
    wrong = [f"  request {rid}: sent {tid}, access log says {logged.get(rid)}" for rid, tid in sent.items()
             if logged.get(rid) != tid]
    if wrong:
        raise ExpectationFailed("TRACE_NOT_CONTINUED", f"{len(wrong)} of {len(sent)} requests' access logs do not "
                                "carry the trace id the client sent", "\n".join(wrong[:5]),
                                Evidence(expected=len(sent), seen=len(sent) - len(wrong)))


CRAFTED_SEED = 20261126
CRAFTED_COUNT = 100  # stratified ids: exactly rate * count are sampled; a 10% threshold shift moves at least one


def check_crafted_sampling(stack: Stack, rate: float, count: int = CRAFTED_COUNT,
                           seed: int = CRAFTED_SEED) -> expect_sampling.DecisionReport:
    """At ``rate`` (applied here, then restored), ``count`` stratified crafted ids plus the three boundary ids
    (one below, at, one above ``rate * 2^64``) are sampled exactly as Kong's rule says, in exactly the number it
    gives (``round(rate * count) + 1``, ±0)."""
    boundary = kong_sampler.boundary_ids(rate)
    trace_ids = [*expect_sampling.stratified_trace_ids(count, seed), boundary["below"], boundary["at"],
                 boundary["above"]]
    exact = expect_sampling.stratified_count(count, rate) + 1
    with claims.applied(stack, sampling_rate=rate):
        report = check_sampling_decisions(stack, rate, len(trace_ids), trace_ids=trace_ids, expected_count=exact)
    if report.traced != exact:  # assert_decisions already failed on any mismatch; this pins the count itself
        raise ExpectationFailed("SAMPLING_DECISION", f"{report.traced} crafted ids traced, exactly {exact} expected",
                                str(report), Evidence(expected=exact, seen=report.traced, facts={"rate": rate}))
    return report
