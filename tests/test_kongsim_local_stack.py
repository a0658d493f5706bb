"""The Kong simulator's sandbox on the whole local stack: a custom_fields_by_lua snippet that uses a global Kong's
sandbox does not provide loses every access log line, as in Kong, so the logs claim fails; and the local stack's
traces have Kong's span set for hostname upstreams.

Kong/kong@3.9.1: kong/tools/kong-lua-sandbox.lua:58-89 (no setmetatable among the sandbox's globals),
kong/plugins/tcp-log/handler.lua:71-79 (the snippet runs before the timer that sends the line: an error loses it).
Needs the collector (``--stack local``).
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from otelgate import claims
from otelgate.expect import ExpectationFailed
from otelgate.stacks.base import Stack
from otelgate.stacks.local import LocalStack
from otelgate.waiting import poll_until

# kong.yaml's own unwrap, written with setmetatable: fine in plain LuaJIT, refused by Kong's sandbox
SNIPPET = """local t = kong.log.serialize().trace_id
local view = setmetatable({}, {__index = t})
if type(t) == "table" then
  return view.w3c
end
return t
"""


@pytest.fixture(scope="module")
def local(stack: Stack) -> LocalStack:
    if not isinstance(stack, LocalStack):
        pytest.skip("these tests are about the local stack (run with --stack local)")
    return stack


def test_setmetatable_in_the_snippet_fails_the_logs_claim(local: LocalStack) -> None:
    with claims.applied(local, kong_plugin_config={"tcp-log": {"custom_fields_by_lua.trace_id": SNIPPET}}):
        with pytest.raises(ExpectationFailed) as failed:
            claims.check_access_logs(local, requests=3)
        kong_log = local.processes["kong"].log_tail()
    assert failed.value.cause == "NO_LOGS", failed.value
    assert "attempt to call global 'setmetatable' (a nil value)" in kong_log


def test_local_traces_have_kongs_span_set_for_hostname_upstreams(local: LocalStack) -> None:
    # tracing_instrumentations=all, a hostname upstream, one try: instrumentation.lua@3.9.1 creates the root
    # (:243), kong.router (:61-65), the access and header_filter plugin spans (:152-171), one kong.dns per
    # resolution (:286-309; the upstream is a name, balancer/init.lua:290-296 skips only IP literals) and
    # kong.balancer (:97-147)
    response = httpx.get(f"{local.gateway_url}/pricing/price?id=1", timeout=10)
    assert response.status_code == 200
    request_id = response.headers["x-kong-request-id"]
    root = poll_until(lambda: [s for s in local.sink.spans(name="kong")
                               if s["attributes"].get("kong.request.id") == request_id],
                      bool, what=f"the kong span of request {request_id}", timeout=20, interval=0.2)[0]
    expected = Counter({"kong": 1, "kong.router": 1, "kong.access.plugin.opentelemetry": 1, "kong.dns": 1,
                        "kong.balancer": 1, "kong.header_filter.plugin.opentelemetry": 1})
    spans = poll_until(lambda: [s for s in local.sink.spans(trace_id=root["trace_id"])
                                if s["name"] == "kong" or s["name"].startswith("kong.")],
                       lambda found: Counter(s["name"] for s in found) == expected,
                       what="Kong's six spans of the request", timeout=20, interval=0.2)
    dns = next(s for s in spans if s["name"] == "kong.dns")
    assert dns["attributes"]["dns.record.domain"] == "localhost"
