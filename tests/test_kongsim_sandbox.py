"""The Kong simulator's custom_fields_by_lua sandbox against Kong's own rules.

Expected values are read from Kong/kong@3.9.1:
- kong/tools/kong-lua-sandbox.lua:58-89 (the whitelist: _VERSION, assert, error, ipairs, next, pairs, pcall, select,
  tonumber, tostring, type, unpack, xpcall; coroutine.*, listed math/os/string/table fields; nothing else),
- kong-lua-sandbox.lua:91-102 (library tables are read-only: "Can not modify <lib>.<key>. Protected by the sandbox."),
- kong-lua-sandbox.lua:129-148 (a fresh env per sandbox() call, _G = env, then options.env),
- kong/tools/sandbox.lua:74-84,139 (options.env falls back to a `require` that refuses: "require '%s' not allowed
  within sandbox"),
- kong/plugins/tcp-log/handler.lua:71-79 (sandbox(expression, opts)() per snippet per request; an error escapes
  before timer_at, so the line is lost).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import lupa.luajit21 as luajit
import pytest
from kongsim_fakes import running_stack

from otelgate import kongconfig
from otelgate.kongsim.tcplog import LuaCustomFields
from otelgate.waiting import poll_until


def run(fields: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    LuaCustomFields(fields).evaluate(lambda: {"request": {"method": "GET"}}, lambda _name: None,
                                     values.__setitem__)
    return values


# (snippet, the message Kong's sandbox raises); the globals are absent from kong-lua-sandbox.lua:58-79, so LuaJIT
# raises its nil-call/nil-index message; the writes hit the __newindex of kong-lua-sandbox.lua:94-96
REFUSED = [
    ("return setmetatable({}, {})", "attempt to call global 'setmetatable' (a nil value)"),
    ("return getmetatable('')", "attempt to call global 'getmetatable' (a nil value)"),
    ("return rawget({}, 1)", "attempt to call global 'rawget' (a nil value)"),
    ("local t = {} rawset(t, 1, 1) return 1", "attempt to call global 'rawset' (a nil value)"),
    ("return rawequal(1, 1)", "attempt to call global 'rawequal' (a nil value)"),
    ("return rawlen({})", "attempt to call global 'rawlen' (a nil value)"),
    ("return string.dump(function() end)", "attempt to call field 'dump' (a nil value)"),
    ("math.randomseed(1) return 1", "attempt to call field 'randomseed' (a nil value)"),
    ("string.trim = function(s) return s end return 1", "Can not modify string.trim. Protected by the sandbox."),
    ("table.x = 1 return 1", "Can not modify table.x. Protected by the sandbox."),
    ("return io.open('/etc/passwd')", "attempt to index global 'io' (a nil value)"),
    ("return loadstring('return 1')()", "attempt to call global 'loadstring' (a nil value)"),
    ("return require('cjson')", "require 'cjson' not allowed within sandbox"),
    # the sandbox passes coroutine.* through, but OpenResty disables its coroutine API outside yieldable phases and
    # tcp-log runs snippets in the log phase: openresty/lua-nginx-module@v0.10.26 src/ngx_http_lua_coroutine.c
    # (the coroutine_api wrapper calls the ngx versions, which check NGX_HTTP_LUA_CONTEXT_YIELDABLE) and
    # src/ngx_http_lua_util.h:35-42 (no LOG in it), :55 ("log_by_lua*"), :74 (the message)
    ("return coroutine.wrap(function() end)()", "API disabled in the context of log_by_lua*"),
]


@pytest.mark.parametrize(("snippet", "message"), REFUSED)
def test_refused_globals_raise_kongs_message(snippet: str, message: str) -> None:
    with pytest.raises(luajit.LuaError) as raised:
        run({"f": snippet})
    assert message in str(raised.value)


def test_every_snippet_gets_a_fresh_environment() -> None:
    # kong-lua-sandbox.lua:130 `local env = {}` per sandbox() call; tcp-log calls sandbox() per snippet
    values = run({"a": "leak = 41 return leak + 1", "b": "return type(leak)", "c": "return _G == _G._G"})
    assert values == {"a": 42, "b": "nil", "c": True}


def test_allowed_globals_coroutine_version_unpack_and_require_shape() -> None:
    values = run({
        "version": "return _VERSION",  # kong-lua-sandbox.lua:61 (LuaJIT reports Lua 5.1)
        "co": "return type(coroutine.wrap)",  # :64-65 (visible; calling it is refused in the log phase, below)
        "unpack": "return select(2, unpack({'a', 'b'}))",  # :62
        "require": "return type(require)",  # kong/tools/sandbox.lua:77: a function (that refuses)
        "print": "return type(print)",  # not in :61-62
        "os": "return type(os.execute)",  # only clock/date/difftime/time (:73)
        "tostring": "return tostring(12)",
    })
    assert values == {"version": "Lua 5.1", "co": "function", "unpack": "b", "require": "function", "print": "nil",
                      "os": "nil", "tostring": "12"}


def test_kong_and_ngx_come_from_options_env() -> None:
    # tcp-log handler.lua:11 sandbox_opts = { env = { kong = kong, ngx = ngx } }; kong-lua-sandbox.lua:139
    values = run({"m": "return kong.log.serialize().request.method", "k": "return _G.kong ~= nil"})
    assert values == {"m": "GET", "k": True}


def test_bytecode_is_not_loaded() -> None:
    # kong-lua-sandbox.lua:144 load(code, nil, 't', env): text chunks only ("\27" starts a bytecode chunk)
    with pytest.raises(ValueError, match="compile"):
        LuaCustomFields({"f": "\x1bLJ\x02"})


def test_setmetatable_loses_the_line_in_the_running_simulator(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="otelgate.kongsim")
    snippet = ("local t = kong.log.serialize().trace_id\n"
               "local wrapped = setmetatable({}, {__index = t})\n"
               "return wrapped.w3c")
    with running_stack({"tcp-log": {"custom_fields_by_lua": {"trace_id": snippet}}}) as st:
        assert httpx.get(f"{st.proxy}/coupon/a", timeout=5).status_code == 200
        record = poll_until(lambda: [r for r in caplog.records if "line not sent" in r.getMessage()], bool,
                            what="the tcp-log error in the simulator's log", timeout=5, interval=0.05)[0]
        assert st.sim.node.runtime is not None and st.sim.node.runtime.tcp_sender is not None
        assert st.sim.node.runtime.tcp_sender.sent_lines == 0
        assert st.lines.lines == []
    # the line number is lost as in Kong: the message is the re-raised one (kong-lua-sandbox.lua:164)
    assert "attempt to call global 'setmetatable' (a nil value)" in record.getMessage()


def test_a_snippet_using_pdk_the_simulator_lacks_is_refused_at_load(tmp_path: Any) -> None:
    doc = kongconfig.load()
    tcp = next(p for p in doc["plugins"] if p["name"] == "tcp-log")
    tcp["config"]["custom_fields_by_lua"] = {"svc": "return kong.router.get_service().name"}
    from otelgate.kongsim.node import build_runtime
    with pytest.raises(kongconfig.KongConfigError, match=r"does not implement \(line 1: kong\.router\.get_service\)"):
        build_runtime(doc, "node", "test")


def test_static_check_names_each_refused_global_with_kongs_message() -> None:
    from otelgate.kongsim.sandbox import refused_globals

    for snippet, message in REFUSED:
        found = refused_globals(snippet)
        assert [r.message for r in found] == [message.replace("'cjson'", "'...'")], (snippet, found)
    snippet = "local ok = 1\nlocal m = setmetatable({}, {})\nreturn string.dump(print)"
    assert [(r.name, r.line) for r in refused_globals(snippet)] == [
        ("setmetatable", 2), ("string.dump", 3), ("print", 3)]
    # Kong's own unwrap and everything on the whitelist pass; a global the snippet assigns is its own
    assert refused_globals(kongconfig.tcp_log_snippets(kongconfig.load())["trace_id"]) == []
    assert refused_globals("x = coroutine.running() return _VERSION, x, _G.pairs, math.floor(1.5)") == []


def test_lint_names_the_refused_global_with_kongs_message(tmp_path: Any) -> None:
    import shutil

    import yaml

    from otelgate import paths
    from otelgate.lint import lint_manifests

    manifests = tmp_path / "manifests"
    shutil.copytree(paths.manifests_dir(), manifests)
    kong_yaml = manifests / "kong" / "kong.yaml"
    doc = yaml.safe_load(kong_yaml.read_text())
    tcp = next(p for p in doc["plugins"] if p["name"] == "tcp-log")
    tcp["config"]["custom_fields_by_lua"]["trace_id"] = (
        "local t = kong.log.serialize().trace_id\nreturn setmetatable({}, {__index = t}).w3c")
    kong_yaml.write_text(yaml.safe_dump(doc))
    findings = [f"{f.file}: {f.message}" for f in lint_manifests(manifests)]
    sandbox_findings = [f for f in findings if "custom_fields_by_lua" in f]
    assert len(sandbox_findings) == 1, findings
    assert "custom_fields_by_lua.trace_id uses setmetatable (line 2)" in sandbox_findings[0]
    assert "attempt to call global 'setmetatable' (a nil value)" in sandbox_findings[0]
    assert not [f for f in lint_manifests(paths.manifests_dir()) if "custom_fields_by_lua" in f.message]


def test_ngx_null_is_refused_at_load_not_faked_as_nil() -> None:
    # in Kong ngx.null is a lightuserdata distinct from nil; a nil stand-in would make `x == ngx.null` true for nil
    from otelgate.kongsim.tcplog import LuaCompileError

    with pytest.raises(LuaCompileError, match=r"line 1: ngx\.null"):
        LuaCustomFields({"f": "local t = kong.log.serialize().trace_id return t ~= ngx.null and t or nil"})
