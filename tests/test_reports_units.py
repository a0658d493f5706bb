"""The report pieces without a stack: redaction, the HTML page (from a real sink's dump), the journal and its
playback, the replayed sink's horizon, ``otelgate report``, and the live view."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from otelgate import traffic
from otelgate.cli import main as otelgate_main
from otelgate.redact import REDACTED, scrub_data, scrub_files, scrub_text
from otelgate.reports.artifacts import folder_name, involved_trace_ids
from otelgate.reports.html import LiveViewServer, Window, live_view_app, render_html, select_view
from otelgate.reports.journal import Player, Recorder, ReplayMismatch
from otelgate.reports.replay import visible_until
from otelgate.sink.server import SinkServer
from otelgate.sink.testing import (
    CUMULATIVE,
    fake_token,
    log_record,
    logs_request,
    metrics_request,
    new_span_id,
    new_trace_id,
    post_otlp,
    span,
    sum_metric,
    traces_request,
)
from otelgate.traffic import Traffic

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT


# ------------------------------------------------------------------------------------------------ redaction

def test_scrub_text_removes_known_secrets_and_anything_token_shaped() -> None:
    token = fake_token()
    text = (f"raw {token}; header Authorization: Api-Token abc.def123; bearer: Bearer eyJhbGciOi.x.y; "
            f'json "api_token": "s3cr3t-value"; kept: Api-Token ${{env:DT_API_TOKEN}}; '
            "prose: [wrong Api-Token in the collector's exporter]")
    clean = scrub_text(text, ["s3cr3t-value"])
    for secret in (token, "abc.def123", "eyJhbGciOi.x.y", "s3cr3t-value"):
        assert secret not in clean, clean
    assert "Api-Token ${env:DT_API_TOKEN}" in clean, "a reference to a variable is not a secret"
    assert "wrong Api-Token in the collector's exporter" in clean, "prose is not a credential"
    assert clean.count(REDACTED) == 4
    assert scrub_text(text, ["s3cr3t-value"], patterns=False) == text.replace("s3cr3t-value", REDACTED)


def test_scrub_data_replaces_values_of_secret_named_keys_at_any_depth() -> None:
    data = {"attributes": {"http.request.header.authorization": ["Api-Token xyz"], "request": {
        "headers": {"authorization": "Basic dXNlcjpwYXNz", "accept": "*/*"}}}, "n": 3, "ok": True}
    clean = scrub_data(data)
    assert clean["attributes"]["http.request.header.authorization"] == REDACTED
    assert clean["attributes"]["request"]["headers"] == {"authorization": REDACTED, "accept": "*/*"}
    assert clean["n"] == 3 and clean["ok"] is True
    assert data["attributes"]["request"]["headers"]["authorization"] == "Basic dXNlcjpwYXNz", "input untouched"


def test_scrub_files_rewrites_only_files_holding_a_secret(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.log").write_text("token=TOPSECRETVALUE here")
    (tmp_path / "b.txt").write_text("nothing")
    rewritten = scrub_files(tmp_path, ["TOPSECRETVALUE"])
    assert rewritten == [tmp_path / "sub" / "a.log"]
    assert (tmp_path / "sub" / "a.log").read_text() == f"token={REDACTED} here"


# ------------------------------------------------------------------------------------------ a real sink's dump

@pytest.fixture(scope="module")
def sink_token() -> str:
    return fake_token()


@pytest.fixture(scope="module")
def dump(sink_token: str) -> Iterator[dict[str, Any]]:
    """A Dynatrace-profile sink fed one Kong -> coupon -> membership trace, an orphan span, an accepted DELTA sum,
    a rejected CUMULATIVE sum and an access log carrying the token in a header."""
    with SinkServer(profile="dynatrace", token=sink_token) as sink:
        trace_id = new_trace_id()
        kong, balancer, coupon, coupon_client, member = (new_span_id() for _ in range(5))

        def post_span(service: str, name: str, span_id: bytes, parent: bytes, kind: int, in_trace: bytes = trace_id,
                      **attrs: Any) -> None:
            request = traces_request([span(name, in_trace, span_id, parent, kind=kind, attributes=attrs)], service)
            assert post_otlp(sink.signal_url("traces"), request, sink_token).status_code == 200

        post_span("kong-otel", "kong", kong, b"", SERVER, **{"kong.request.id": "req-1"})
        post_span("kong-otel", "kong.balancer", balancer, kong, CLIENT)
        post_span("coupon", "GET /coupons", coupon, balancer, SERVER)
        post_span("coupon", "GET", coupon_client, coupon, CLIENT)
        post_span("membership", "GET /isMember", member, coupon_client, SERVER)
        post_span("membership", "<script>alert(1)</script>", new_span_id(), new_span_id(), SERVER, new_trace_id())
        for temporality in (None, CUMULATIVE):
            metric = (sum_metric("kong_http_requests_total", (3,), attributes={"route": "coupon-route"})
                      if temporality is None else sum_metric("cumulative_total", (7,), temporality=temporality))
            post_otlp(sink.signal_url("metrics"), metrics_request([metric], "kong-otel"), sink_token)
        record = log_record("GET /coupon/coupons", trace_id=trace_id, span_id=kong,
                            attributes={"http.request.header.authorization": f"Api-Token {sink_token}"})
        assert post_otlp(sink.signal_url("logs"), logs_request([record], "kong"), sink_token).status_code == 200
        yield sink.client.dump()


class Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str | None]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "details" and "span" in (dict(attrs).get("class") or "").split():
            self.rows.append(dict(attrs))


def parse(page: str) -> Rows:
    parser = Rows()
    parser.feed(page)
    return parser


def test_the_page_draws_each_span_with_service_name_and_kind(dump: dict[str, Any]) -> None:
    trace_id = next(s["trace_id"] for s in dump["spans"] if s["name"] == "kong")
    page = render_html(dump, title="unit", focus_trace_ids=[trace_id])
    rows = parse(page).rows
    assert {(r["data-service"], r["data-name"]) for r in rows} >= {
        ("kong-otel", "kong"), ("kong-otel", "kong.balancer"), ("coupon", "GET /coupons"), ("coupon", "GET"),
        ("membership", "GET /isMember")}
    assert [r["data-name"] for r in rows][:5] == ["kong", "kong.balancer", "GET /coupons", "GET", "GET /isMember"]
    assert "this test&#x27;s trace" in page or "this test's trace" in page
    assert "⚠ parent missing" in page, "the orphan span is flagged"
    kong_row = page[page.index("data-name='kong'"):]
    details = kong_row[:kong_row.index("</details>")]
    assert "<h4>attributes</h4>" in details and "kong.request.id" in details and "req-1" in details
    for kind in ("SERVER", "CLIENT"):
        assert f"<span class=kind>{kind}</span>" in page


def test_the_page_lists_metric_points_logs_and_rejections_with_their_reason(dump: dict[str, Any]) -> None:
    page = render_html(dump)
    assert "kong_http_requests_total" in page and "route" in page
    assert "UNSUPPORTED_METRIC_TYPE_MONOTONIC_CUMULATIVE_SUM" in page
    assert "GET /coupon/coupons" in page


def test_the_page_is_self_contained_escaped_and_token_free(dump: dict[str, Any], sink_token: str) -> None:
    page = render_html(dump)
    assert sink_token not in page and "Api-Token dt0c01" not in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    tags = parse(page).tags
    assert not [t for t, a in tags if t in ("link", "img", "iframe") or (t == "script" and a.get("src"))]
    assert not re.search(r"https?://", page), "no absolute URL, so nothing to fetch"
    assert "@import" not in page and "url(" not in page


def test_a_window_keeps_only_what_arrived_inside_it(dump: dict[str, Any]) -> None:
    received = [s["received_at"] for s in dump["spans"]]
    late = Window(int((max(received) + 60) * 1e9), int((max(received) + 120) * 1e9))
    view = select_view(dump, late)
    assert (view.traces, view.metric_points, view.logs, view.rejections) == ([], [], [], [])
    whole = select_view(dump, Window(int((min(received) - 60) * 1e9), int((max(received) + 60) * 1e9)))
    assert len(whole.traces) == 2 and whole.logs and whole.rejections


def test_involved_traces_come_from_request_ids_and_the_failure_text(dump: dict[str, Any]) -> None:
    kong_trace = next(s["trace_id"] for s in dump["spans"] if s["name"] == "kong")
    orphan_trace = next(s["trace_id"] for s in dump["spans"] if s["name"].startswith("<script>"))
    assert involved_trace_ids(dump, ["req-1"]) == [kong_trace]
    assert orphan_trace != kong_trace
    assert involved_trace_ids(dump, [], f"see trace {orphan_trace}") == [orphan_trace]
    assert involved_trace_ids(dump, ["nope"], "0" * 32) == []


def test_folder_names_are_safe_and_distinct() -> None:
    a = folder_name("suites/test_x.py::test_y[fault one/two]")
    assert "/" not in a and " " not in a and a.startswith("suites-test_x.py__test_y")
    long = ["suites/t.py::test_" + "x" * 300 + str(i) for i in range(2)]
    assert len({folder_name(n) for n in long}) == 2 and all(len(folder_name(n)) <= 120 for n in long)


# ------------------------------------------------------------------------------------------- report command

def test_report_command_writes_the_page(dump: dict[str, Any], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "dump.json"
    source.write_text(json.dumps(dump))
    assert otelgate_main(["report", str(source), "-o", str(tmp_path / "out.html")]) == 0
    assert "<article class=trace" in (tmp_path / "out.html").read_text()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(("content", "error"), [
    ("not json", "is not JSON"),
    ('{"spans": []}', "is not an otelgate dump"),
    ('{"otelgate_dump": 1, "spans": {}, "metric_points": [], "logs": [], "rejections": []}', "spans must be list"),
])
def test_report_command_rejects_bad_input_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  content: str, error: str) -> None:
    source = tmp_path / "bad.json"
    source.write_text(content)
    assert otelgate_main(["report", str(source)]) == 2
    assert error in capsys.readouterr().err
    assert not (tmp_path / "bad.html").exists()


# ----------------------------------------------------------------------------------------------- live view

def test_live_view_serves_the_current_dump(dump: dict[str, Any]) -> None:
    calls: list[int] = []

    def provider() -> dict[str, Any]:
        calls.append(1)
        return dump

    with LiveViewServer(provider, refresh_seconds=3) as view:
        page = httpx.get(view.url, timeout=10)
        assert page.status_code == 200 and "<article class=trace" in page.text
        assert '<meta http-equiv="refresh" content="3">' in page.text
        assert httpx.get(view.url + "nope", timeout=10).status_code == 404
    assert calls == [1]


def test_live_view_says_when_the_sink_is_unreachable() -> None:
    def broken() -> dict[str, Any]:
        raise httpx.ConnectError("connection refused")

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=live_view_app(broken))
        async with httpx.AsyncClient(transport=transport, base_url="http://view") as client:
            return await client.get("/")

    response = asyncio.run(get())
    assert response.status_code == 503 and "could not read the sink" in response.text


# ------------------------------------------------------------------------------------------ journal, replay

class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        self.now += 10
        return self.now


def recorded_traffic(path: str, started: int, ids: list[str]) -> Traffic:
    return Traffic(path=path, started_ns=started, ended_ns=started + 5, request_ids=ids, statuses=[200] * len(ids))


def test_the_journal_plays_back_what_was_recorded_in_order_per_segment() -> None:
    clock = Clock()
    recorder = Recorder(clock)
    with recorder.segment("fixture:warm_stack@"):
        recorder.traffic("/a", 1, lambda: recorded_traffic("/a", 100, ["r1"]))
    with recorder.segment("suites/t.py::test_x"):
        assert recorder.clock(lambda: 200) == 200
        recorder.traffic("/b", 2, lambda: recorded_traffic("/b", 300, ["r2", "r3"]))
    assert recorder.request_ids_between(250, 400) == ["r2", "r3"]

    horizons: list[int | None] = []
    player = Player(json.loads(json.dumps(recorder.to_json())), horizons.append)
    never = lambda: pytest.fail("playback must not send")  # noqa: E731
    with player.segment("suites/t.py::test_x"):
        assert player.clock(lambda: 999_999) == 200
        assert player.traffic("/b", 2, never).request_ids == ["r2", "r3"]
        with pytest.raises(ReplayMismatch, match="ends after 2 event"):
            player.clock(lambda: 0)
    with player.segment("fixture:warm_stack@"):
        assert player.traffic("/a", 1, never).statuses == [200]
    segment_end = recorder.segments["suites/t.py::test_x"]["ended_ns"]
    assert horizons[:3] == [200, 300, segment_end], "the sink is shown as of the next recorded event"


def test_playback_refuses_what_the_recording_does_not_hold() -> None:
    recorder = Recorder(Clock())
    with recorder.segment("t::a"):
        recorder.traffic("/a", 1, lambda: recorded_traffic("/a", 100, ["r1"]))
    player = Player(recorder.to_json(), lambda _: None)
    with player.segment("t::a"), pytest.raises(ReplayMismatch, match="the recording sent 1 x '/a'"):
        player.traffic("/other", 1, lambda: recorded_traffic("/x", 0, []))
    with player.segment("t::a"), pytest.raises(ReplayMismatch, match="is a send"):
        player.clock(lambda: 0)
    with player.segment("t::unknown"), pytest.raises(ReplayMismatch, match="does not have"):
        player.clock(lambda: 0)


def test_traffic_module_routes_send_and_clock_through_an_installed_journal() -> None:
    recorder = Recorder(Clock())
    previous, traffic.journal = traffic.journal, recorder
    try:
        with recorder.segment("t::x"):
            value = traffic.now_ns()
            traffic.checkpoint()
    finally:
        traffic.journal = previous
    entries = recorder.segments["t::x"]["entries"]
    assert [e["kind"] for e in entries] == ["clock", "clock"] and entries[0]["at"] == value


def test_the_replayed_sink_shows_only_what_had_arrived() -> None:
    dump = {"otelgate_dump": 1, "spans": [{"received_at": 1.0}, {"received_at": 3.0}, {"name": "no time"}],
            "metric_points": [{"received_at": 2.0}], "logs": [], "rejections": [{"at": 2.5}]}
    early = visible_until(dump, 2_000_000_000)
    assert early["spans"] == [{"received_at": 1.0}, {"name": "no time"}]
    assert early["metric_points"] == [{"received_at": 2.0}] and early["rejections"] == []
    assert visible_until(dump, None) == dump
