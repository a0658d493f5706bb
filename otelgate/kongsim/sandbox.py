"""Kong 3.9's sandbox for ``custom_fields_by_lua``, as the Kong simulator (a TEST DOUBLE, not Kong) reproduces it,
and a static check of the globals a snippet uses.

The rules, learnt from Kong/kong@3.9.1 (the code below is written for the simulator, not copied):

* ``kong/tools/kong-lua-sandbox.lua:58-89``: the only globals are ``_VERSION assert error ipairs next pairs pcall
  select tonumber tostring type unpack xpcall`` and listed fields of ``coroutine``, ``math``, ``os``, ``string``,
  ``table``. ``setmetatable``, ``getmetatable``, ``raw*``, ``load*``, ``print``, ``require`` (see below), ``io``,
  ``debug``, ``string.dump``, ``math.randomseed``, ``os.execute``, ... are absent: reading one gives nil, so calling
  it raises LuaJIT's ``attempt to call global 'setmetatable' (a nil value)``.
* ``:91-102``: the five library tables are read-only proxies; a write raises
  ``Can not modify string.x. Protected by the sandbox.``
* ``:129-148``: every ``sandbox()`` call builds a fresh environment (the whitelist, ``_G`` = the environment itself,
  falling back to ``options.env``) and compiles the snippet as text (mode ``t``) with that environment; the tcp-log
  handler calls ``sandbox(expression, sandbox_opts)()`` for each snippet of each request
  (``kong/plugins/tcp-log/handler.lua:71-76``), so no global survives from one snippet to the next.
* ``:160-164``: a runtime error is caught and raised again with ``error(msg)``, which prefixes the sandbox's own
  position; it escapes the tcp-log log handler before the timer that sends the line is created
  (``handler.lua:74-79``): the line is lost.
* ``kong/tools/sandbox.lua:74-88,139``: ``options.env`` (``{kong = kong, ngx = ngx}``) falls back to an environment
  holding only a ``require`` that refuses every module not in ``untrusted_lua_sandbox_requires`` (empty by default):
  ``require 'cjson' not allowed within sandbox``.

The simulator's PDK inside snippets is minimal (:data:`SIMULATED_PDK`); a snippet that reaches for more is refused
when the config is loaded (:func:`unsupported_pdk`), so the local stack never fails where Kong would not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import lupa.luajit21 as luajit

SAFE_GLOBALS: tuple[str, ...] = ("_VERSION", "assert", "error", "ipairs", "next", "pairs", "pcall", "select",
                                 "tonumber", "tostring", "type", "unpack", "xpcall")
SAFE_FIELDS: dict[str, tuple[str, ...]] = {
    "coroutine": ("create", "resume", "running", "status", "wrap", "yield"),
    "math": ("abs", "acos", "asin", "atan", "atan2", "ceil", "cos", "cosh", "deg", "exp", "fmod", "floor", "frexp",
             "huge", "ldexp", "log", "log10", "max", "min", "modf", "pi", "pow", "rad", "random", "sin", "sinh",
             "sqrt", "tan", "tanh"),
    "os": ("clock", "date", "difftime", "time"),
    "string": ("byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match", "rep", "reverse", "sub",
               "upper"),
    "table": ("concat", "insert", "maxn", "remove", "sort"),
}
# the sandbox lets coroutine.* through, but OpenResty's coroutine API (all but `running`) raises in the log phase,
# where tcp-log runs its snippets (openresty/lua-nginx-module@v0.10.26 src/ngx_http_lua_coroutine.c, the injected
# coroutine_api wrapper, and src/ngx_http_lua_util.h:35-42,55,74: the log phase is not yieldable; OpenResty
# 1.25.3.2 per Kong/kong@3.9.1 .requirements)
LOG_PHASE_DISABLED = ("create", "resume", "status", "wrap", "yield")
LOG_PHASE_MESSAGE = "API disabled in the context of log_by_lua*"
PASSED_ENV = ("kong", "ngx")  # tcp-log's sandbox_opts.env (kong/plugins/tcp-log/handler.lua:11)
# what a snippet sees as globals in Kong: the whitelist, _G (the environment itself), options.env, then `require`
VISIBLE_GLOBALS = frozenset((*SAFE_GLOBALS, *SAFE_FIELDS, "_G", *PASSED_ENV, "require"))
# the PDK the simulator gives snippets; anything else under kong./ngx. is refused at load (not simulated)
SIMULATED_PDK = ("kong.log.serialize", "kong.request.get_header", "kong.ctx.shared", "ngx.ctx")


def _lua_list(items: Iterable[str]) -> str:
    return "{" + ", ".join(f'"{x}"' for x in items) + "}"


_RUNTIME_LUA = (
    "local SAFE_GLOBALS = " + _lua_list(SAFE_GLOBALS) + "\n"
    "local LOG_PHASE_DISABLED = " + _lua_list(LOG_PHASE_DISABLED) + "\n"
    f'local LOG_PHASE_MESSAGE = "{LOG_PHASE_MESSAGE}"\n'
    "local SAFE_FIELDS = {" + ", ".join(f"{m} = {_lua_list(f)}" for m, f in SAFE_FIELDS.items()) + "}\n"
    r"""
local G = _G
local base = {}
for _, name in ipairs(SAFE_GLOBALS) do base[name] = G[name] end
for module, fields in pairs(SAFE_FIELDS) do
  local allowed = {}
  for _, f in ipairs(fields) do allowed[f] = G[module][f] end
  if module == "coroutine" then
    -- ngx_lua's coroutine API refuses to run outside yieldable phases; tcp-log runs in the log phase
    for _, f in ipairs(LOG_PHASE_DISABLED) do
      allowed[f] = function() error(LOG_PHASE_MESSAGE, 0) end
    end
  end
  base[module] = setmetatable({}, {
    __index = allowed,
    __newindex = function(_, key, _)
      error("Can not modify " .. module .. "." .. key .. ". Protected by the sandbox.")
    end,
  })
end

local config_env = {
  require = function(name)
    error(string.format("require '%s' not allowed within sandbox", name))
  end,
}

local M = {}

-- compile as Kong's schema does (text only); raises the LuaJIT message on a syntax error
function M.compile(code)
  local fn, err = load(code, nil, "t", {})
  if not fn then error(err, 0) end
  return true
end

-- the options.env of one request: {kong = <pdk>, ngx = <ngx>} falling back to config_env
function M.passed_env(kong, ngx)
  return setmetatable({kong = kong, ngx = ngx}, {__index = config_env})
end

-- one snippet, one fresh environment, compiled and run as Kong's sandbox() + call does
function M.run(code, passed)
  local env = {}
  for k, v in pairs(base) do
    local pv = passed[k]
    if pv ~= nil then env[k] = pv else env[k] = v end
  end
  setmetatable(env, {__index = passed})
  env._G = env
  local fn = assert(load(code, nil, "t", env))
  local ok, result = pcall(fn)
  if not ok then error(result) end
  return result
end

return M
""")

# static analysis: walk LuaJIT's bytecode of the compiled snippet (never runs it). Opcode numbers are learnt from
# this VM by compiling probes, so no opcode table is hard-coded.
_ANALYSIS_LUA = r"""
local ju = require("jit.util")
local bit = require("bit")
local band, rshift = bit.band, bit.rshift

local function op_of(code, want_const)
  local fn = assert(loadstring(code))
  local info = ju.funcinfo(fn)
  local found
  for pc = 1, info.bytecodes - 1 do
    local ins = ju.funcbc(fn, pc)
    local op = band(ins, 255)
    if want_const then
      local d, c = rshift(ins, 16), band(rshift(ins, 16), 255)
      if ju.funck(fn, -d - 1) == want_const or ju.funck(fn, -c - 1) == want_const then found = op end
    else
      found = found or op
    end
  end
  return found
end

local P = "__otelgate_probe"
local OPS = {
  GGET = op_of("return " .. P, P),
  GSET = op_of(P .. " = 0", P),
  TGETS = op_of("local t = {} return t." .. P, P),
  TSETS = op_of("local t = {} t." .. P .. " = 0", P),
}
local CALLS = {}
for _, code in ipairs({P .. "()", "return " .. P .. "()", P .. "(...)", "return " .. P .. "(...)"}) do
  local fn = assert(loadstring(code))
  for pc = 1, ju.funcinfo(fn).bytecodes - 1 do
    local ins, m = ju.funcbc(fn, pc)
    if band(m, 7) == 2 and band(ins, 255) ~= OPS.GGET then CALLS[band(ins, 255)] = true; break end
  end
end

local function protos(fn, out)
  out[#out + 1] = fn
  local info = ju.funcinfo(fn)
  for i = 1, info.gcconsts or 0 do
    local k = ju.funck(fn, -i)
    if type(k) == "proto" then protos(k, out) end
  end
  return out
end

-- how the value loaded into register `a` at `pc` is used next: called, indexed, or something else
local function use_of(fn, pc, a, nbc)
  for npc = pc + 1, nbc - 1 do
    local nins, nm = ju.funcbc(fn, npc)
    local nop, na = band(nins, 255), band(rshift(nins, 8), 255)
    if CALLS[nop] and na == a then return "call" end
    if (nop == OPS.TGETS or nop == OPS.TSETS) and rshift(nins, 24) == a then return "index" end
    if (band(nm, 7) == 1 or band(nm, 7) == 2) and na <= a then return "value" end
  end
  return "value"
end

-- returns a list of {kind, name, line, use}: kind = "global" | "field" | "set_field" | "assign";
-- for "field"/"set_field", name = "<global>.<field>"; use = "call" | "index" | "value"
return function(code)
  local main, err = load(code, nil, "t")
  if not main then return {{"syntax", err, 0, "value"}} end
  local found = {}
  for _, fn in ipairs(protos(main, {})) do
    local info = ju.funcinfo(fn)
    local chain = {}  -- register -> dotted chain rooted at a global
    for pc = 1, info.bytecodes - 1 do
      local ins, m = ju.funcbc(fn, pc)
      local op, a = band(ins, 255), band(rshift(ins, 8), 255)
      local b, c, d = rshift(ins, 24), band(rshift(ins, 16), 255), rshift(ins, 16)
      local line = ju.funcinfo(fn, pc).currentline
      local ma = band(m, 7)
      local new_chain
      if op == OPS.GGET then
        local name = ju.funck(fn, -d - 1)
        new_chain = name
        found[#found + 1] = {"global", name, line, use_of(fn, pc, a, info.bytecodes)}
      elseif op == OPS.GSET then
        found[#found + 1] = {"assign", ju.funck(fn, -d - 1), line, "value"}
      elseif op == OPS.TGETS and chain[b] then
        new_chain = chain[b] .. "." .. ju.funck(fn, -c - 1)
        found[#found + 1] = {"field", new_chain, line, use_of(fn, pc, a, info.bytecodes)}
      elseif op == OPS.TSETS and chain[b] then
        found[#found + 1] = {"set_field", chain[b] .. "." .. ju.funck(fn, -c - 1), line, "value"}
      end
      if ma == 1 or ma == 2 then  -- A is written (dst) or a call/iterator base: forget what those registers held
        if ma == 2 then for r in pairs(chain) do if r >= a then chain[r] = nil end end end
        chain[a] = new_chain
      end
    end
  end
  return found
end
"""


@dataclass(frozen=True)
class Use:
    kind: str  # global | field | set_field | assign
    name: str
    line: int
    use: str  # call | index | value


@dataclass(frozen=True)
class RefusedGlobal:
    """A global (or library field) a snippet uses that Kong's sandbox does not provide or refuses to change."""

    name: str
    line: int
    message: str  # what Kong raises at run time (the log line is then lost)

    def __str__(self) -> str:
        return f"line {self.line}: {self.name}: {self.message}"


_analysis_lock = threading.Lock()
_analysis: tuple[Any, Any] | None = None


def _analyser() -> Any:
    global _analysis
    if _analysis is None:
        runtime = luajit.LuaRuntime(unpack_returned_tuples=False, register_eval=False, register_builtins=False)
        _analysis = (runtime, runtime.execute(_ANALYSIS_LUA))
    return _analysis[1]


def uses(snippet: str) -> list[Use]:
    """Every global read/write and field chain rooted at a global in ``snippet`` (compiled, never run).
    Raises :class:`lupa.luajit21.LuaError` when it does not compile."""
    with _analysis_lock:
        raw = _analyser()(snippet)
        found = [Use(str(item[1]), str(item[2]), int(item[3]), str(item[4])) for item in raw.values()]
    if found and found[0].kind == "syntax":
        raise luajit.LuaSyntaxError(found[0].name)
    return found


def _nil_message(kind: str, name: str, use: str) -> str:
    short = name.rsplit(".", 1)[-1]
    if use == "call":
        return f"attempt to call {kind} '{short}' (a nil value)"
    if use == "index":
        return f"attempt to index {kind} '{short}' (a nil value)"
    return f"'{name}' is nil in Kong's sandbox (using it raises a Lua error)"


def refused_globals(snippet: str) -> list[RefusedGlobal]:
    """The globals and library fields ``snippet`` uses that Kong 3.9's sandbox does not provide (nil there) or
    forbids changing, each with the message Kong raises when the snippet runs (the access log line is then lost).
    A global the snippet assigns itself is its own (a fresh environment per run) and is not reported.
    ``require`` is reported because the default ``untrusted_lua_sandbox_requires`` is empty."""
    found = uses(snippet)
    assigned = {u.name for u in found if u.kind == "assign"}
    out: list[RefusedGlobal] = []
    for item in found:
        root, _, rest = item.name.partition(".")
        if item.kind == "global":
            if item.name == "require" and item.use == "call":
                out.append(RefusedGlobal("require", item.line, "require '...' not allowed within sandbox"))
            elif item.name not in VISIBLE_GLOBALS and item.name not in assigned:
                out.append(RefusedGlobal(item.name, item.line, _nil_message("global", item.name, item.use)))
        elif item.kind in ("field", "set_field") and "." not in rest:
            if root == "coroutine" and rest in LOG_PHASE_DISABLED and item.kind == "field":
                out.append(RefusedGlobal(item.name, item.line, LOG_PHASE_MESSAGE))
            elif root in SAFE_FIELDS:
                if item.kind == "set_field":
                    out.append(RefusedGlobal(item.name, item.line,
                                             f"Can not modify {item.name}. Protected by the sandbox."))
                elif rest not in SAFE_FIELDS[root]:
                    out.append(RefusedGlobal(item.name, item.line, _nil_message("field", item.name, item.use)))
            elif root == "_G" and item.kind == "field" and rest not in VISIBLE_GLOBALS and rest not in assigned:
                out.append(RefusedGlobal(item.name, item.line, _nil_message("field", item.name, item.use)))
    return _unique(out)


def snippet_problems(snippet: str) -> list[str]:
    """What ``otelgate lint`` reports for one ``custom_fields_by_lua`` snippet, before anything runs: a compile
    error, or each refused global with the message Kong raises (the access log line is then lost)."""
    try:
        found = refused_globals(snippet)
    except luajit.LuaError as exc:
        return [f"does not compile: {exc}"]
    return [f"uses {r.name} (line {r.line}), which Kong 3.9's sandbox refuses: Kong raises \"{r.message}\" and "
            "the access log line is lost (Kong/kong@3.9.1 kong/tools/kong-lua-sandbox.lua)" for r in found]


def _unique(items: list[RefusedGlobal]) -> list[RefusedGlobal]:
    seen: set[tuple[str, int]] = set()
    out = []
    for item in items:
        if (item.name, item.line) not in seen:
            seen.add((item.name, item.line))
            out.append(item)
    return out


def unsupported_pdk(snippet: str) -> list[str]:
    """``kong.*`` / ``ngx.*`` chains ``snippet`` uses that the simulator's PDK does not implement (Kong has them):
    the simulator refuses such a config at load rather than fail where Kong would not."""
    bad: set[tuple[int, str]] = set()
    for item in uses(snippet):
        if item.kind not in ("field", "set_field") or item.name.split(".", 1)[0] not in PASSED_ENV:
            continue
        name = item.name
        if not any(name == s or name.startswith(s + ".") or s.startswith(name + ".") for s in SIMULATED_PDK):
            bad.add((item.line, name))
    # report the longest chain only (kong.router.get_service, not also kong.router)
    return [f"line {line}: {name}" for line, name in sorted(bad)
            if not any(other.startswith(name + ".") for _l, other in bad)]


class Sandbox:
    """One LuaJIT state running snippets as Kong's sandbox does (see the module docstring)."""

    def __init__(self) -> None:
        self.lua = luajit.LuaRuntime(unpack_returned_tuples=False, register_eval=False, register_builtins=False)
        self._m = self.lua.execute(_RUNTIME_LUA)

    def compile(self, code: str) -> None:
        """Raises :class:`lupa.luajit21.LuaError` with LuaJIT's message when ``code`` does not compile."""
        self._m.compile(code)

    def passed_env(self, kong: Any, ngx: Any) -> Any:
        return self._m.passed_env(kong, ngx)

    def run(self, code: str, passed_env: Any) -> Any:
        """Run one snippet in a fresh environment; a Lua error propagates as :class:`lupa.luajit21.LuaError`."""
        return self._m.run(code, passed_env)
