"""Kong 3.9's log serializer and tcp-log plugin, as the Kong simulator (a TEST DOUBLE, not Kong) reproduces them.

* :func:`apply_serialize_values` is ``kong.log.serialize``'s ``edit_result``
  (kong-3.9.md#custom_fields_by_lua): values set with
  ``set_serialize_value`` are applied in order, mode ``set``; ``nil`` deletes; dotted keys nest, creating tables;
  an intermediate key that exists and is not a table raises "Subkey '...' is not a table".
* :class:`LuaCustomFields` runs ``custom_fields_by_lua`` in LuaJIT 2.1 (``lupa.luajit21``), the VM family Kong runs,
  under Kong's sandbox rules (:mod:`otelgate.kongsim.sandbox`: the same whitelist, a fresh environment per snippet).
  The PDK is MINIMAL: ``kong.log.serialize()``, ``kong.request.get_header(name)``, ``kong.ctx.shared``, ``ngx.ctx``;
  a snippet using more is refused at load. A Lua error (e.g. a global Kong's sandbox lacks) aborts the tcp-log log
  handler as in Kong: the line is not sent and the error is logged.
* :func:`cjson_encode` mimics lua-cjson's defaults (``/`` escaped as ``\\/``, numbers as ``%.14g``, empty tables
  as ``{}``); :class:`TcpLogSender` writes one JSON object per line over a kept-alive TCP connection, off the
  request path, reconnecting on failure; a line that cannot be sent is lost (no queue, no retry:
  kong-3.9.md#framing-and-delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import lupa.luajit21 as luajit

from otelgate.kongsim.sandbox import SIMULATED_PDK, Sandbox, unsupported_pdk

log = logging.getLogger("otelgate.kongsim.tcplog")


class SerializeError(RuntimeError):
    """``kong.log.serialize`` failed (e.g. a dotted key crosses a non-table value)."""


def _lua_tostring(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".14g")
    return str(value)


def _split_key(key: str) -> list[str]:
    """Kong splits on every dot from the second character on (a leading dot stays in the first subkey)."""
    parts, start = [], 0
    for index in range(1, len(key)):
        if key[index] == ".":
            parts.append(key[start:index])
            start = index + 1
    parts.append(key[start:])
    return parts


def apply_serialize_values(root: dict[str, Any], serialize_values: list[tuple[str, Any]]) -> dict[str, Any]:
    """Kong's ``edit_result`` in mode ``set`` (the mode tcp-log and the propagation module use)."""
    for key, value in serialize_values:
        node = root
        parts = _split_key(key)
        for subkey in parts[:-1]:
            if node.get(subkey) is None:
                node[subkey] = {}
            elif not isinstance(node[subkey], dict | list):
                raise SerializeError(f"The key '{key}' could not be used as a serialize value. Subkey '{subkey}' "
                                     f"is not a table. It's {_lua_tostring(node[subkey])}")
            node = node[subkey]
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return root


# ---------------------------------------------------------------------------------------------------------------
# lua-cjson compatible encoding

def _cjson_string(text: str) -> str:
    """lua-cjson's string escaping: like JSON's, plus the solidus (``\\/``, kong-3.9.md#framing-and-delivery) and DEL as
    ``\\u007f``; non-ASCII stays raw UTF-8."""
    return json.dumps(text, ensure_ascii=False).replace("/", "\\/").replace("\x7f", "\\u007f")


class LuaArray(list[Any]):
    """A Lua table carrying cjson's array metatable (e.g. ``balancer_data.tries``): encoded ``[]`` when empty,
    where a plain empty table is encoded ``{}``."""


def cjson_encode(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return format(float(value), ".14g") if abs(value) >= 10**14 else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("Cannot serialise number: must not be NaN or Infinity")
        return format(value, ".14g")
    if isinstance(value, str):
        return _cjson_string(value)
    if isinstance(value, list | tuple):
        if not value:  # a plain Lua table cannot tell an empty array from an empty object; cjson prints {}
            return "[]" if isinstance(value, LuaArray) else "{}"
        return "[" + ",".join(cjson_encode(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if v is not None]
        return "{" + ",".join(f"{_cjson_string(str(k))}:{cjson_encode(v)}" for k, v in items) + "}"
    raise TypeError(f"Cannot serialise {type(value).__name__}: type not supported")


# ---------------------------------------------------------------------------------------------------------------
# custom_fields_by_lua

class LuaCompileError(ValueError):
    pass


class LuaCustomFields:
    """The compiled ``custom_fields_by_lua`` of one tcp-log instance (compiled at config load: a syntax error fails
    the load loudly instead of dropping every line later)."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self._sandbox = Sandbox()
        self._lua = self._sandbox.lua
        self._snippets: list[tuple[str, str]] = []
        for key, code in fields.items():
            try:
                self._sandbox.compile(code)
            except luajit.LuaError as exc:
                raise LuaCompileError(f"custom_fields_by_lua.{key} does not compile: {exc}") from exc
            pdk = unsupported_pdk(code)
            if pdk:
                raise LuaCompileError(
                    f"custom_fields_by_lua.{key} uses PDK functions the Kong simulator does not implement "
                    f"({', '.join(pdk)}); it implements only {', '.join(SIMULATED_PDK)} (Kong has the full PDK: "
                    "run this snippet on the docker or kind stack)")
            self._snippets.append((key, code))

    def __bool__(self) -> bool:
        return bool(self._snippets)

    def to_lua(self, value: Any) -> Any:
        if isinstance(value, dict):
            table = self._lua.table()
            for k, v in value.items():
                if v is not None:
                    table[k] = self.to_lua(v)
            return table
        if isinstance(value, list | tuple):
            table = self._lua.table()
            for i, v in enumerate(value, start=1):
                table[i] = self.to_lua(v)
            return table
        return value

    def from_lua(self, value: Any, depth: int = 0) -> Any:
        if depth > 100:
            raise ValueError("value must be a non-self-referencial table")
        if luajit.lua_type(value) == "table":
            keys = list(value.keys())
            if keys and all(isinstance(k, int) for k in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
                return [self.from_lua(value[i], depth + 1) for i in range(1, len(keys) + 1)]
            return {_lua_tostring(k): self.from_lua(value[k], depth + 1) for k in keys}
        if luajit.lua_type(value) is not None:  # functions, userdata, threads: not serializable (Kong errors too)
            raise ValueError("value must be nil, a number, string, boolean or a non-self-referencial table "
                             "containing numbers, string and booleans")
        return value

    def evaluate(self, serialize: Callable[[], dict[str, Any]], get_header: Callable[[str], str | None],
                 set_serialize_value: Callable[[str, Any], None]) -> None:
        """Run every snippet (tcp-log's log handler): ``set_serialize_value(key, sandbox(code)())``.

        Raises on the first Lua error, like the handler does; the caller drops the line and logs the error.
        """
        kong = self._lua.table_from({
            "log": self._lua.table_from({"serialize": lambda: self.to_lua(serialize())}),
            "request": self._lua.table_from({"get_header": get_header}),
            "ctx": self._lua.table_from({"shared": self._lua.table()}),  # kong.ctx.shared: one per request
        })
        passed = self._sandbox.passed_env(kong, self._lua.table_from({"ctx": self._lua.table()}))
        for key, code in self._snippets:  # a fresh environment per snippet (Kong/kong@3.9.1 tcp-log handler.lua:73-75)
            set_serialize_value(key, self.from_lua(self._sandbox.run(code, passed)))


# ---------------------------------------------------------------------------------------------------------------
# the TCP sender

class TcpLogSender:
    """Lines to ``host:port`` over one kept-alive connection, sent by a background task (never on the request
    path). A failed connect or send loses that line and logs an error, as Kong's tcp-log does."""

    def __init__(self, host: str, port: int, timeout_ms: float, keepalive_ms: float) -> None:
        self.host, self.port = host, port
        self.key = (host, port, timeout_ms, keepalive_ms)
        self.timeout = timeout_ms / 1000
        self.keepalive = keepalive_ms / 1000
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._last_used = 0.0
        self.sent_lines = 0
        self.lost_lines = 0
        self.connections = 0
        self.closed = False

    def start(self) -> None:
        if self._task is None:  # a sender kept across a reload is already running
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"tcp-log {self.host}:{self.port}")

    def send(self, line: str) -> None:
        if self.closed:  # a request that started before a config reload finished after it
            self.lost_lines += 1
            log.error("[tcp-log] line of a retired config dropped (reload during traffic)")
            return
        self._queue.put_nowait(line.encode("utf-8") + b"\n")

    def pending(self) -> int:
        return self._queue.qsize()

    def _usable(self) -> bool:
        if self._writer is None or self._reader is None:
            return False
        idle = time.monotonic() - self._last_used
        # the pool closes idle sockets after `keepalive`; a peer that closed shows EOF on our reader
        return not (self._writer.is_closing() or self._reader.at_eof() or idle > self.keepalive)

    async def _connection(self) -> asyncio.StreamWriter:
        if self._usable():
            assert self._writer is not None
            return self._writer
        await self._drop_connection()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
        self._reader, self._writer = reader, writer
        self.connections += 1
        asyncio.get_running_loop().create_task(self._watch_eof(reader))
        return writer

    @staticmethod
    async def _watch_eof(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass

    async def _drop_connection(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        self._writer = self._reader = None

    async def _run(self) -> None:
        while True:
            data = await self._queue.get()
            try:
                writer = await self._connection()
            except (OSError, TimeoutError) as exc:
                self.lost_lines += 1
                log.error("[tcp-log] failed to connect to %s:%s: %s", self.host, self.port, exc or type(exc).__name__)
                continue
            try:
                writer.write(data)
                await asyncio.wait_for(writer.drain(), self.timeout)
            except (OSError, TimeoutError) as exc:
                self.lost_lines += 1
                log.error("[tcp-log] failed to send data to %s:%s: %s", self.host, self.port,
                          exc or type(exc).__name__)
                await self._drop_connection()
                continue
            self.sent_lines += 1
            self._last_used = time.monotonic()

    async def flush(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.qsize() and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.closed = True
        if self._queue.qsize():
            self.lost_lines += self._queue.qsize()
            log.error("[tcp-log] %d lines not sent at shutdown/reload", self._queue.qsize())
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_connection()
