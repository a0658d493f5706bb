"""Claim 5's logic without a stack: durations, the exporter policy in force, what counts as arrived/duplicated (a
fake sink holding hand-made records), and the verdict's cause from the collector's own counters. The live claim and
its negative controls run in suites/test_resilience.py."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from otelgate import claims, resilience
from otelgate.collector.config import CollectorPorts, derive_local_config, load_collector_resource, resource_config
from otelgate.expect.errors import ExpectationFailed
from otelgate.resilience_cli import Step, Survival
from otelgate.stacks.base import StackSettings
from otelgate.traffic import Traffic

ROUTE = claims.TRACES_ROUTE


# ------------------------------------------------------------------------------------------------ settings

@pytest.mark.parametrize(("text", "value"), [("200ms", 0.2), ("5s", 5.0), ("1m30s", 90.0), ("2h", 7200.0), (3, 3.0)])
def test_durations_read_as_the_collector_writes_them(text: object, value: float) -> None:
    assert resilience.seconds(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["5", "five seconds", "5sx", "", True])
def test_a_bad_duration_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        resilience.seconds(bad)


def test_the_demo_exporter_policy_and_overrides() -> None:
    config = resource_config(load_collector_resource())
    policy = resilience.policy_of(config)
    assert policy.retry_enabled and policy.queue_enabled
    assert policy.timeout > 5.0, "a 5 s backend must not be cut off by the exporter's timeout"
    assert policy.scrape_interval == 5.0
    off = resilience.policy_of(config, {"retry_on_failure": {"enabled": False}})
    assert not off.retry_enabled and off.max_interval == policy.max_interval
    small = resilience.policy_of(config, {"sending_queue": {"queue_size": 5}})
    assert small.queue_size == 5 and small.num_consumers == policy.num_consumers


def test_unset_exporter_keys_take_the_exporterhelper_defaults() -> None:
    policy = resilience.policy_of({"exporters": {resilience.EXPORTER: {"endpoint": "http://x"}}})
    assert (policy.retry_enabled, policy.max_interval, policy.max_elapsed_time) == (True, 30.0, 300.0)
    assert (policy.queue_size, policy.num_consumers, policy.timeout) == (1000, 10, 30.0)
    with pytest.raises(ValueError, match="no exporter"):
        resilience.policy_of({"exporters": {}})


def test_exporter_settings_reach_every_otlp_http_exporter_and_nothing_else() -> None:
    resource = load_collector_resource()
    ports = CollectorPorts(1, 2, 3, 4, 5, 6)
    settings = StackSettings(exporter_settings={"retry_on_failure": {"enabled": False},
                                                "sending_queue": {"queue_size": 7}})
    plain = derive_local_config(resource, ports=ports, sink_endpoint="http://s", kong_status_target="k:1")
    changed = derive_local_config(resource, ports=ports, sink_endpoint="http://s", kong_status_target="k:1",
                                  exporter_settings=settings.exporter_settings)
    exporter = changed["exporters"][resilience.EXPORTER]
    assert exporter["retry_on_failure"]["enabled"] is False
    assert exporter["sending_queue"]["queue_size"] == 7
    # a deep merge: the manifests' other keys of those sections survive
    before = plain["exporters"][resilience.EXPORTER]
    assert exporter["retry_on_failure"]["max_interval"] == before["retry_on_failure"]["max_interval"]
    assert exporter["sending_queue"]["num_consumers"] == before["sending_queue"]["num_consumers"]
    assert before["retry_on_failure"]["enabled"] is True and before["sending_queue"]["queue_size"] != 7
    assert {k: v for k, v in changed.items() if k != "exporters"} == {k: v for k, v in plain.items()
                                                                      if k != "exporters"}
    assert "exporter_settings" in StackSettings.__dataclass_fields__


def test_outage_length_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(resilience.OUTAGE_ENV, raising=False)
    assert resilience.Outage.from_env().seconds == resilience.DEFAULT_OUTAGE_SECONDS == 20.0
    monkeypatch.setenv(resilience.OUTAGE_ENV, "7")
    assert resilience.Outage.from_env().seconds == 7.0
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(resilience.OUTAGE_ENV, bad)
        with pytest.raises(ValueError, match=resilience.OUTAGE_ENV):
            resilience.Outage.from_env()


def test_the_bound_is_one_back_off_a_scrape_and_a_flush() -> None:
    policy = resilience.policy_of({"exporters": {resilience.EXPORTER: {}}, "receivers": {
        "prometheus": {"config": {"scrape_configs": [{"scrape_interval": "5s"}]}}}})
    assert resilience.Outage(7).bound(policy) == 30 * 1.5 + 5 + resilience.FLUSH_SECONDS
    assert resilience.Outage(7, retry_after=60).bound(policy) == 60 + 5 + resilience.FLUSH_SECONDS


# ------------------------------------------------------------------------------------------------ counting

@dataclass
class FakeSink:
    logs_: list[dict[str, Any]] = field(default_factory=list)
    spans_: list[dict[str, Any]] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)

    def logs(self) -> list[dict[str, Any]]:
        return self.logs_

    def spans(self, name: str | None = None) -> list[dict[str, Any]]:
        return [s for s in self.spans_ if name is None or s["name"] == name]

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans_ if s["trace_id"] == trace_id]

    def metric_points(self) -> list[dict[str, Any]]:
        return self.points


@dataclass
class FakeStack:
    sink: FakeSink


def _log(request_id: str) -> dict[str, Any]:
    return {"attributes": {"request.id": request_id, "started_at": 1, "request.headers.traceparent":
                           f"00-{request_id:0>32}-{'1' * 16}-01"}}


def _trace(request_id: str) -> list[dict[str, Any]]:
    trace_id = f"{request_id:0>32}"
    services = claims.TRACE_PATH
    return [{"name": "kong" if i == 0 else f"span {i}", "trace_id": trace_id, "span_id": f"{request_id}-{i}",
             "service_name": service, "attributes": {"kong.request.id": request_id} if i == 0 else {}}
            for i, service in enumerate(services)]


def _point(name: str, start: int, end: int, value: int) -> dict[str, Any]:
    body = {"count": value} if name == claims.LATENCY_HISTOGRAM else {"value": value}
    return {"name": name, "type": "histogram" if name == claims.LATENCY_HISTOGRAM else "sum",
            "temporality": "DELTA", "start_unix_nano": start, "time_unix_nano": end,
            "attributes": {claims.ROUTE_LABEL: ROUTE.kong_route, "code": "200"}, **body}


def _run(ids: list[str], ended_ns: int = 100) -> resilience.OutageRun:
    traffic = Traffic(path=ROUTE.path, started_ns=0, ended_ns=ended_ns, request_ids=list(ids),
                      statuses=[200] * len(ids))
    policy = resilience.policy_of({"exporters": {resilience.EXPORTER: {}}})
    return resilience.OutageRun(resilience.Outage(7), policy, ROUTE, baseline_ns=10, traffic=traffic)


def _everything(ids: list[str]) -> FakeSink:
    after = 100 + claims.KONG_SYNC_NS + 1
    points = [_point(n, 10, 50, 2) for n in (claims.REQUEST_COUNTER, claims.LATENCY_HISTOGRAM)]
    points += [_point(n, 50, after, len(ids) - 2) for n in (claims.REQUEST_COUNTER, claims.LATENCY_HISTOGRAM)]
    return FakeSink([_log(i) for i in ids], [s for i in ids for s in _trace(i)], points)


IDS = [f"r{n}" for n in range(6)]


def test_everything_once_is_complete_and_passes() -> None:
    run = _run(IDS)
    run.delivery = resilience.observe_delivery(FakeStack(_everything(IDS)), run, {})  # type: ignore[arg-type]
    assert run.delivery.complete and not run.delivery.duplicated and run.delivery.metric_windows_ok
    assert set(run.delivery.expected) == {"logs", "kong root spans", "whole traces",
                                          f"{claims.REQUEST_COUNTER} (sum of deltas)",
                                          f"{claims.LATENCY_HISTOGRAM} (sum of deltas)"}
    resilience.judge(run)


@pytest.mark.parametrize("twice", ["log", "span", "metric point"])
def test_anything_stored_twice_is_a_duplicate(twice: str) -> None:
    sink = _everything(IDS)
    if twice == "log":
        sink.logs_.append(_log(IDS[3]))
    elif twice == "span":
        sink.spans_.append(_trace(IDS[2])[1])
    else:
        sink.points.append(dict(sink.points[0]))
    run = _run(IDS)
    run.delivery = resilience.observe_delivery(FakeStack(sink), run, {})  # type: ignore[arg-type]
    with pytest.raises(ExpectationFailed) as failed:
        resilience.judge(run)
    assert failed.value.cause == "DUPLICATES"


@pytest.mark.parametrize("lost", ["log", "service span", "metric window"])
def test_anything_missing_is_loss(lost: str) -> None:
    sink = _everything(IDS)
    if lost == "log":
        sink.logs_.pop()
    elif lost == "service span":
        sink.spans_ = [s for s in sink.spans_ if not (s["trace_id"].endswith("r4") and s["name"] != "kong")]
    else:
        sink.points = [p for p in sink.points if int(p["start_unix_nano"]) != 10]
    run = _run(IDS)
    run.delivery = resilience.observe_delivery(FakeStack(sink), run, {})  # type: ignore[arg-type]
    assert not run.delivery.complete
    with pytest.raises(ExpectationFailed) as failed:
        resilience.judge(run)
    assert failed.value.cause == "OUTAGE_LOSS"
    assert failed.value.evidence.seen is not None and failed.value.evidence.expected is not None
    assert failed.value.evidence.seen < failed.value.evidence.expected


def test_not_complete_without_a_scrape_after_the_traffic() -> None:
    sink = _everything(IDS)
    run = _run(IDS, ended_ns=10**12)
    run.delivery = resilience.observe_delivery(FakeStack(sink), run, {})  # type: ignore[arg-type]
    assert not run.delivery.complete


# ------------------------------------------------------------------------------------------------ causes

def _lossy(counters_after: Mapping[str, float]) -> resilience.OutageRun:
    sink = _everything(IDS)
    sink.logs_.pop()
    run = _run(IDS)
    run.delivery = resilience.observe_delivery(FakeStack(sink), run, {})  # type: ignore[arg-type]
    run.counters_before = {"send_failed_spans": 1.0, "enqueue_failed_spans": 0.0, "queue_size": 0.0}
    run.counters_after = dict(run.counters_before, **counters_after)
    return run


@pytest.mark.parametrize(("after", "cause"), [
    ({"enqueue_failed_spans": 12.0}, "QUEUE_FULL"),
    ({"enqueue_failed_log_records": 3.0, "send_failed_spans": 5.0}, "QUEUE_FULL"),
    ({"send_failed_log_records": 4.0}, "DROPPED_ON_SEND_FAILURE"),
    ({"queue_size": 3.0}, "LATE"),
    ({}, "OUTAGE_LOSS"),
])
def test_the_cause_comes_from_the_collectors_own_counters(after: dict[str, float], cause: str) -> None:
    with pytest.raises(ExpectationFailed) as failed:
        resilience.judge(_lossy(after))
    assert failed.value.cause == cause
    facts = failed.value.evidence.facts
    assert bool(facts["collector enqueue_failed"]) == any(k.startswith("enqueue") for k in after)


def test_a_refusal_the_outage_did_not_inject_is_reported_as_such() -> None:
    run = _lossy({})
    fault = resilience.Rejection("traces", 429, resilience.FAULT_REASON, "fault injected")
    run.rejections = [fault, replace(fault, http_status=401, reason="UNAUTHENTICATED")]
    with pytest.raises(ExpectationFailed) as failed:
        resilience.judge(run)
    assert failed.value.cause == "SINK_REJECTIONS"
    assert [r.reason for r in failed.value.evidence.rejections] == ["UNAUTHENTICATED"]
    assert run.refusals() == {"traces HTTP 429": 1}


def test_counter_increase_ignores_what_did_not_move_and_unknown_counters() -> None:
    assert resilience.counter_increase(None, {"send_failed_spans": 3}, "send_failed_") == {}
    assert resilience.counter_increase({"send_failed_spans": 3}, {"send_failed_spans": 3, "send_failed_x": 2},
                                       "send_failed_") == {"send_failed_x": 2}


# ------------------------------------------------------------------------------------------------ measurement

def test_survival_names_the_limit() -> None:
    policy = resilience.policy_of({"exporters": {resilience.EXPORTER: {}}})
    survival = Survival(5.0, policy, [Step(20, None, 12.0, {"traces": 100, "logs": 90}),
                                      Step(60, None, 20.0, {"traces": 300, "logs": 280})])
    assert survival.longest_survived == 60 and survival.first_lost is None
    projection = survival.queue_projection()
    assert projection is not None and projection[1] == "traces" and projection[0] == pytest.approx(200.0)
    assert "queue_size = 1000" in survival.limiting_setting()
    survival.steps.append(Step(120, "QUEUE_FULL", None, {"traces": 1000}))
    assert survival.first_lost is not None and survival.longest_survived == 60
    assert "sending_queue.queue_size = 1000" in survival.limiting_setting()
    text = survival.render()
    assert "| 120s | `QUEUE_FULL` |" in text and "longest outage survived: 60s; first lost: 120s" in text
    assert collections.Counter(text.splitlines())[""] == 2


def test_a_window_lost_where_a_histogram_gained_buckets_is_named_as_such() -> None:
    """Kong exposes a bucket once a request fell into it; cumulative_to_delta restarts the series then, and the
    window of that scrape is never exported: only the histogram's sum is short, the exporter dropped nothing."""
    sink = _everything(IDS)
    histogram = [p for p in sink.points if p["name"] == claims.LATENCY_HISTOGRAM]
    histogram[0]["explicit_bounds"] = [1.0] * 8
    histogram[1]["explicit_bounds"] = [1.0] * 11
    sink.points.remove(histogram[1])
    sink.points.append(dict(histogram[1], start_unix_nano=70, count=1))   # the window 50..70 was never exported
    run = _run(IDS)
    run.delivery = resilience.observe_delivery(FakeStack(sink), run, {})  # type: ignore[arg-type]
    run.counters_before = run.counters_after = {"send_failed_spans": 0.0, "queue_size": 0.0}
    with pytest.raises(ExpectationFailed) as failed:
        resilience.judge(run)
    assert failed.value.cause == "NEW_HISTOGRAM_BUCKET"
    assert "9 -> 12 buckets" in failed.value.message
    run.counters_after = {"send_failed_spans": 0.0, "queue_size": 0.0, "enqueue_failed_metric_points": 4.0}
    with pytest.raises(ExpectationFailed) as failed:
        resilience.judge(run)
    assert failed.value.cause == "QUEUE_FULL"


def test_a_bucket_change_right_after_the_baseline_is_seen_against_the_baseline_scrape() -> None:
    sink = _everything(IDS)
    first, second = [p for p in sink.points if p["name"] == claims.LATENCY_HISTOGRAM]
    sink.points.remove(first)                                       # the window right after the baseline was lost
    second["explicit_bounds"] = [1.0] * 11
    sink.points.append(dict(first, start_unix_nano=0, time_unix_nano=10, explicit_bounds=[1.0] * 8))  # baseline
    run = _run(IDS)
    run.delivery = resilience.observe_delivery(FakeStack(sink), run, {})  # type: ignore[arg-type]
    run.counters_before = run.counters_after = {"queue_size": 0.0}
    with pytest.raises(ExpectationFailed) as failed:
        resilience.judge(run)
    assert failed.value.cause == "NEW_HISTOGRAM_BUCKET"


def test_the_suite_may_tolerate_a_new_bucket_loss_but_nothing_else() -> None:
    def lossy(counter_short: bool) -> resilience.OutageRun:
        sink = _everything(IDS)
        first, second = [p for p in sink.points if p["name"] == claims.LATENCY_HISTOGRAM]
        sink.points.remove(first)
        second["explicit_bounds"] = [1.0] * 11
        sink.points.append(dict(first, start_unix_nano=0, time_unix_nano=10, explicit_bounds=[1.0] * 8))
        if counter_short:
            sink.points.remove(next(p for p in sink.points if p["name"] == claims.REQUEST_COUNTER))
        run = _run(IDS)
        run.delivery = resilience.observe_delivery(FakeStack(sink), run, {})  # type: ignore[arg-type]
        run.counters_before = run.counters_after = {"queue_size": 0.0}
        return run

    run = lossy(counter_short=False)
    resilience.judge(run, tolerate_new_bucket=True)
    assert "9 -> 12 buckets" in run.tolerated
    with pytest.raises(ExpectationFailed) as failed:      # the request counter short too: outage loss
        resilience.judge(lossy(counter_short=True), tolerate_new_bucket=True)
    assert failed.value.cause == "OUTAGE_LOSS"


@pytest.mark.parametrize("steps", [[], [60, 20], [0, 10], [float("inf")]])
def test_survival_steps_must_be_ascending_positive_seconds(steps: list[float]) -> None:
    from otelgate.resilience_cli import survivable_outage

    with pytest.raises(ValueError, match="ascending positive"):
        survivable_outage(FakeStack(FakeSink()), 5.0, steps)  # type: ignore[arg-type]


def test_outage_cli_refuses_bad_steps_before_starting_a_stack(capsys: pytest.CaptureFixture[str]) -> None:
    from otelgate import cli

    assert cli.main(["outage", "--steps", "20,soon"]) == 2
    assert "--steps" in capsys.readouterr().err
