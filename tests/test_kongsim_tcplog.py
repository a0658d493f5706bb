"""Fidelity of the Kong simulator's tcp-log lines (a test double of Kong 3.9) against docs/reference/kong-3.9.md
(#serialized-trace-id, #tcp-log): serializer fields, the trace_id shape with and without the custom_fields_by_lua
unwrap, Kong's set/delete/nested-key
semantics, Lua errors, framing and the kept-alive connection."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
import pytest
from kongsim_fakes import running_stack

from otelgate.kongsim.tcplog import SerializeError, apply_serialize_values, cjson_encode
from otelgate.waiting import poll_until

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
HEX32 = re.compile(r"[0-9a-f]{32}")


def wait_lines(stack: Any, count: int) -> list[dict[str, Any]]:
    return poll_until(stack.lines.json_lines, lambda lines: len(lines) >= count, what=f"{count} tcp-log lines",
                      timeout=5, interval=0.05)


def test_one_line_fields_and_plain_trace_id_with_the_unwrap() -> None:
    with running_stack() as st:
        response = httpx.get(f"{st.proxy}/coupon/coupons?limit=2&verbose",
                             headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "authorization": "Bearer secret"},
                             timeout=5)
        line = wait_lines(st, 1)[0]
        raw = st.lines.lines[0]
        balancer = poll_until(lambda: [s for s in st.otlp.spans() if s.name == "kong.balancer"], bool,
                              what="the kong.balancer span", timeout=5, interval=0.05)[0]
        port = st.sim.listeners.proxy_port
        upstream_port = int(st.upstream.url.rsplit(":", 1)[1])

    # one JSON object per line, cjson escaping of "/" (docs/reference/kong-3.9.md#framing-and-delivery)
    assert "\n" not in raw and raw.startswith("{") and raw.endswith("}")
    assert '"uri":"\\/coupon\\/coupons?limit=2&verbose"' in raw

    request_id = response.headers["x-kong-request-id"]
    request = line["request"]
    assert request["id"] == request_id
    assert request["uri"] == "/coupon/coupons?limit=2&verbose"
    assert request["url"] == f"http://127.0.0.1:{port}/coupon/coupons?limit=2&verbose"  # with port
    assert request["querystring"] == {"limit": "2", "verbose": True}
    assert request["method"] == "GET"
    assert request["headers"]["authorization"] == "REDACTED"
    # the injected traceparent, carrying the kong.balancer span id (docs/reference/kong-3.9.md#serialized-trace-id)
    assert request["headers"]["traceparent"] == f"00-{TRACE}-{balancer.span_id.hex()}-01"
    assert isinstance(request["size"], int) and request["size"] > 0

    assert line["upstream_uri"] == "/coupons?limit=2&verbose"
    assert line["upstream_status"] == "200"  # a string (docs/reference/kong-3.9.md#serializer-fields)
    assert line["response"]["status"] == 200 and line["response"]["size"] > 0
    assert line["response"]["headers"]["x-kong-request-id"] == request_id
    assert line["response"]["headers"]["via"] == "1.1 kong/3.9.1"
    assert set(line["latencies"]) == {"kong", "proxy", "request", "receive"}
    assert all(isinstance(v, int) and v >= 0 for v in line["latencies"].values())
    assert len(line["tries"]) == 1
    assert set(line["tries"][0]) == {"balancer_start", "balancer_start_ns", "ip", "port", "balancer_latency",
                                     "balancer_latency_ns"}
    assert (line["tries"][0]["ip"], line["tries"][0]["port"]) == ("127.0.0.1", upstream_port)
    assert (line["route"]["name"], line["route"]["paths"]) == ("coupon-route", ["/coupon"])
    assert line["route"]["strip_path"] is True and "ws_id" in line["route"] and "id" in line["route"]
    assert line["service"]["name"] == "coupon"
    assert line["client_ip"] == "127.0.0.1"
    assert abs(line["started_at"] - line["tries"][0]["balancer_start"]) < 5000
    assert line["source"] == "upstream"
    assert line["workspace_name"] == "default" and re.fullmatch(r"[0-9a-f-]{36}", line["workspace"])
    # the unwrap in kong.yaml: a plain 32-hex string equal to the trace
    # (docs/reference/kong-3.9.md#custom_fields_by_lua)
    assert line["trace_id"] == TRACE and HEX32.fullmatch(line["trace_id"])
    assert set(line) == {"request", "upstream_uri", "upstream_status", "response", "latencies", "tries", "route",
                         "service", "client_ip", "started_at", "source", "workspace", "workspace_name", "trace_id"}


def test_without_the_unwrap_trace_id_is_kongs_map() -> None:
    with running_stack({"tcp-log": {"custom_fields_by_lua": None}}) as st:
        httpx.get(f"{st.proxy}/coupon/coupons", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}, timeout=5)
        httpx.get(f"{st.proxy}/nowhere", timeout=5)
        lines = wait_lines(st, 2)
    by_uri = {line["request"]["uri"]: line for line in lines}
    assert by_uri["/coupon/coupons"]["trace_id"] == {"w3c": TRACE}  # docs/reference/kong-3.9.md#serialized-trace-id
    # the opentelemetry access phase never ran (no route): no trace_id at all, Kong's own 404 (source kong)
    no_route = by_uri["/nowhere"]
    assert "trace_id" not in no_route and "route" not in no_route and "service" not in no_route
    assert (no_route["response"]["status"], no_route["source"], no_route["latencies"]["proxy"]) == (404, "kong", -1)


def test_unwrap_is_nil_safe_when_no_trace_id() -> None:
    with running_stack() as st:
        httpx.get(f"{st.proxy}/nowhere", timeout=5)
        line = wait_lines(st, 1)[0]
    assert "trace_id" not in line


CUSTOM_FIELDS = {
    "new_field": "return 123",
    "route": "return nil",                                   # nil deletes (tcp-log spec)
    "trace.w3c": "local t = kong.log.serialize().trace_id return t and t.w3c",  # dotted keys nest
    "span": 'local tp = kong.request.get_header("traceparent") return tp and tp:match("^%x+%-%x+%-(%x+)%-%x+$")',
    "shared": "kong.ctx.shared.n = (kong.ctx.shared.n or 0) + 1 ngx.ctx.m = 'x' return kong.ctx.shared.n",
    "service.extra": "return {a = 1, b = {true, 'two'}}",
}


def test_custom_fields_set_delete_nest_and_pdk() -> None:
    with running_stack({"tcp-log": {"custom_fields_by_lua": CUSTOM_FIELDS}}) as st:
        httpx.get(f"{st.proxy}/coupon/coupons", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}, timeout=5)
        line = wait_lines(st, 1)[0]
        balancer = poll_until(lambda: [s for s in st.otlp.spans() if s.name == "kong.balancer"], bool,
                              what="the kong.balancer span", timeout=5, interval=0.05)[0]
        httpx.get(f"{st.proxy}/coupon/again", timeout=5)
        second = wait_lines(st, 2)[1]
    assert second["shared"] == 1  # kong.ctx.shared is per request
    assert line["new_field"] == 123
    assert "route" not in line
    assert line["trace"] == {"w3c": TRACE}
    assert line["trace_id"] == {"w3c": TRACE}  # untouched: no custom trace_id here
    assert line["span"] == balancer.span_id.hex()
    assert line["shared"] == 1
    assert line["service"]["extra"] == {"a": 1, "b": [True, "two"]} and line["service"]["name"] == "coupon"


@pytest.mark.parametrize(("fields", "error"), [
    ({"request.method.verb": "return 'x'"}, "Subkey 'method' is not a table. It's GET"),
    ({"boom": "local t = nil return t.field"}, "attempt to index"),
    ({"refused": "return setmetatable({}, {})"}, "attempt to call global 'setmetatable' (a nil value)"),
])
def test_lua_or_serialize_error_drops_the_line_and_logs(fields: dict[str, str], error: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="otelgate.kongsim")
    with running_stack({"tcp-log": {"custom_fields_by_lua": fields}}) as st:
        httpx.get(f"{st.proxy}/coupon/a", timeout=5)
        poll_until(lambda: [r for r in caplog.records if "line not sent" in r.getMessage()], bool,
                   what="the tcp-log error in the simulator's log", timeout=5, interval=0.05)
        # the prometheus plugin (priority 13) ran before tcp-log: the request is counted, only the line is lost
        metrics = poll_until(lambda: httpx.get(f"{st.status}/metrics", timeout=5).text,
                             lambda text: 'code="200"' in text, what="the request in /metrics", timeout=5)
        assert st.sim.node.runtime is not None and st.sim.node.runtime.tcp_sender is not None
        assert st.sim.node.runtime.tcp_sender.sent_lines == 0
        assert st.lines.lines == []
    assert "kong_http_requests_total" in metrics
    message = next(r.getMessage() for r in caplog.records if "line not sent" in r.getMessage())
    assert error in message


def test_lines_share_one_kept_alive_connection() -> None:
    with running_stack() as st:
        for index in range(5):
            httpx.get(f"{st.proxy}/coupon/{index}", timeout=5)
        wait_lines(st, 5)
        assert st.lines.connections == 1


def test_reconnects_after_the_receiver_drops_the_connection() -> None:
    with running_stack() as st:
        httpx.get(f"{st.proxy}/coupon/1", timeout=5)
        wait_lines(st, 1)
        sender = st.sim.node.runtime.tcp_sender  # type: ignore[union-attr]
        assert sender is not None
        st.lines.drop_connections_and_restart()

        def one_more_line() -> int:
            httpx.get(f"{st.proxy}/coupon/again", timeout=5)
            return len(st.lines.lines)
        poll_until(one_more_line, lambda n: n >= 2, what="a line over a new connection", timeout=5, interval=0.1)
        assert st.lines.connections >= 2 and sender.connections >= 2


# ------------------------------------------------------------------------------------------------ units

def test_set_serialize_value_semantics() -> None:
    root: dict[str, Any] = {"request": {"method": "GET"}, "route": {"name": "r"}}
    apply_serialize_values(root, [("a.b.c", 1), ("route", None), ("trace_id", {"w3c": TRACE}), ("trace_id", TRACE)])
    assert root == {"request": {"method": "GET"}, "a": {"b": {"c": 1}}, "trace_id": TRACE}
    expected = ("The key 'request.method.x' could not be used as a serialize value. "
                "Subkey 'method' is not a table. It's GET")
    with pytest.raises(SerializeError, match=re.escape(expected)):
        apply_serialize_values(root, [("request.method.x", 1)])


def test_cjson_encoding_like_lua_cjson() -> None:
    assert cjson_encode({"u": "/a/b", "n": 5.0, "f": 0.5, "e": {}, "big": 1.7956506836679e18, "t": True}) == \
        '{"u":"\\/a\\/b","n":5,"f":0.5,"e":{},"big":1.7956506836679e+18,"t":true}'
    assert json.loads(cjson_encode({"s": 'q"\\\n\x01'})) == {"s": 'q"\\\n\x01'}
