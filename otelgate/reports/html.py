"""A self-contained HTML page from a sink dump: trace waterfalls, metric points, log records, rejections.

One file, no network: CSS and the few lines of JavaScript (filter box, expand/collapse) are inline, and span details
open without JavaScript (``<details>``). Every value passes through :mod:`otelgate.redact` and is
HTML-escaped, so neither a token nor markup from a payload reaches the page.

Also serves the same page live (:class:`LiveViewServer`, :func:`live_view_app`) for ``otelgate up``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from otelgate.expect.traces import TraceTree
from otelgate.redact import scrub_data

Record = Mapping[str, Any]
DumpProvider = Callable[[], Mapping[str, Any]]

MAX_TRACES = 200
MAX_ROWS = 2000


@dataclass(frozen=True)
class Window:
    """The time window of a test (unix ns); items the sink received inside it are "of the window"."""

    start_ns: int
    end_ns: int

    def holds(self, seconds: Any) -> bool:
        if not isinstance(seconds, int | float):
            return True  # an item without a receive time is shown rather than hidden
        return self.start_ns <= seconds * 1e9 <= self.end_ns


@dataclass
class View:
    """What the page shows, chosen from a dump."""

    traces: list[list[Record]]
    metric_points: list[Record]
    logs: list[Record]
    rejections: list[Record]
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- selection

def select_view(dump: Mapping[str, Any], window: Window | None = None, focus_trace_ids: Iterable[str] = (),
                max_traces: int = MAX_TRACES, max_rows: int = MAX_ROWS) -> View:
    """Traces (focused first, then newest first), and the metric points, logs and rejections of the window."""
    focus = [t for t in dict.fromkeys(focus_trace_ids) if t]
    by_trace: dict[str, list[Record]] = {}
    for span in dump.get("spans", []):
        by_trace.setdefault(str(span.get("trace_id", "")), []).append(span)
    in_window = [tid for tid, spans in by_trace.items()
                 if window is None or any(window.holds(s.get("received_at")) for s in spans)]
    newest_first = sorted(in_window, key=lambda tid: -min(int(s.get("start_unix_nano", 0)) for s in by_trace[tid]))
    ordered = [t for t in focus if t in by_trace] + [t for t in newest_first if t not in focus]
    notes = [f"focused trace {t} is not in the dump" for t in focus if t not in by_trace]
    if len(ordered) > max_traces:
        notes.append(f"showing {max_traces} of {len(ordered)} traces (all are in the JSON dump)")
    points = [p for p in dump.get("metric_points", []) if window is None or window.holds(p.get("received_at"))]
    logs = [r for r in dump.get("logs", []) if window is None or window.holds(r.get("received_at"))]
    rejections = list(dump.get("rejections", []))
    if window is not None:
        outside = [r for r in rejections if not window.holds(r.get("at"))]
        rejections = [r for r in rejections if window.holds(r.get("at"))]
        if outside:
            notes.append(f"{len(outside)} rejection(s) outside the test's window are in the JSON dump")
    for label, items in (("metric points", points), ("log records", logs), ("rejections", rejections)):
        if len(items) > max_rows:
            notes.append(f"showing the last {max_rows} of {len(items)} {label}")
    return View(traces=[by_trace[t] for t in ordered[:max_traces]], metric_points=points[-max_rows:],
                logs=logs[-max_rows:], rejections=rejections[-max_rows:], notes=notes)


# ------------------------------------------------------------------------------------------------------- render

def render_html(dump: Mapping[str, Any], *, title: str = "sink dump", window: Window | None = None,
                focus_trace_ids: Iterable[str] = (), failure: str | None = None, failure_summary: str | None = None,
                secrets: Iterable[str] = (), refresh_seconds: float | None = None, max_traces: int = MAX_TRACES,
                max_rows: int = MAX_ROWS) -> str:
    """The whole page as one string (see the module docstring)."""
    secrets, focus = tuple(secrets), tuple(focus_trace_ids)
    clean = scrub_data(dict(dump), secrets)
    view = select_view(clean, window, focus, max_traces, max_rows)
    failure_text = scrub_data(failure, secrets) if failure else None
    summary = scrub_data(failure_summary, secrets) if failure_summary else None
    sections = [
        _failure_section(summary, failure_text) if failure_text or summary else "",
        _traces_section(view.traces, set(focus), _service_colours(view.traces)),
        _metrics_section(view.metric_points),
        _logs_section(view.logs, {s[0]["trace_id"] for s in view.traces if s}),
        _rejections_section(view.rejections),
        _stats_section(clean.get("stats") or {}),
    ]
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds:g}">' if refresh_seconds else ""
    return _PAGE.format(
        title=_e(f"otelgate: {title}"), refresh=refresh, css=_CSS, js=_JS,
        header=_header(clean, title, window, view),
        nav=_nav(view, bool(failure_text or summary)),
        body="\n".join(s for s in sections if s),
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _when(unix_seconds: Any, with_date: bool = False) -> str:
    if not isinstance(unix_seconds, int | float) or unix_seconds <= 0:
        return ""
    shape = "%Y-%m-%d %H:%M:%S.%f" if with_date else "%H:%M:%S.%f"
    return dt.datetime.fromtimestamp(unix_seconds, dt.UTC).strftime(shape)[:-3]


def _when_ns(unix_nano: Any) -> str:
    try:
        return _when(int(unix_nano) / 1e9)
    except (TypeError, ValueError):
        return ""


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else _json(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


# distinct, none of them red: red marks spans with status ERROR
PALETTE = ("#3b7dd8", "#2e9e5b", "#8e44ad", "#d98c1f", "#1aa3a3", "#5b6bd6", "#7a9a1f", "#c2499b", "#4f8a8b",
           "#6d7f99")


def _service_colours(traces: Sequence[Sequence[Record]]) -> dict[str, str]:
    services = sorted({str(s.get("service_name")) for spans in traces for s in spans})
    return {service: PALETTE[index % len(PALETTE)] for index, service in enumerate(services)}


def _header(dump: Mapping[str, Any], title: str, window: Window | None, view: View) -> str:
    created = _when(dump.get("created_at"), with_date=True)
    counts = (f"{len(dump.get('spans', []))} spans, {len(dump.get('metric_points', []))} metric points, "
              f"{len(dump.get('logs', []))} log records, {len(dump.get('rejections', []))} rejections")
    scope = (f"window {_when_ns(window.start_ns)} to {_when_ns(window.end_ns)} UTC" if window
             else "everything in the dump")
    notes = "".join(f"<li>{_e(n)}</li>" for n in view.notes)
    return (f"<h1>otelgate · {_e(title)}</h1>"
            f"<p class=meta>dump of profile <b>{_e(dump.get('profile', '?'))}</b> taken {_e(created)} UTC · "
            f"{_e(counts)} · showing {_e(scope)}</p>" + (f"<ul class=notes>{notes}</ul>" if notes else ""))


def _nav(view: View, has_failure: bool) -> str:
    links = [("failure", "Failure")] if has_failure else []
    links += [("traces", f"Traces ({len(view.traces)})"), ("metrics", f"Metric points ({len(view.metric_points)})"),
              ("logs", f"Log records ({len(view.logs)})"), ("rejections", f"Rejected ({len(view.rejections)})"),
              ("stats", "Stats")]
    return "<nav>" + " ".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in links) + "</nav>"


def _failure_section(summary: str | None, text: str | None) -> str:
    head = f"<pre class=failure>{_e(summary)}</pre>" if summary else ""
    full = (f"<details{'' if summary else ' open'}><summary>the failure as pytest reported it</summary>"
            f"<pre class=full>{_e(text)}</pre></details>") if text else ""
    return f"<section id=failure><h2>Failure</h2>{head}{full}</section>"


# --- traces -------------------------------------------------------------------------------------------------------

def _traces_section(traces: Sequence[Sequence[Record]], focus: set[str], colours: Mapping[str, str]) -> str:
    if not traces:
        body = "<p class=empty>No spans reached the sink in this window.</p>"
    else:
        body = "\n".join(_trace(spans, spans[0]["trace_id"] in focus, colours) for spans in traces)
    tools = ('<div class=tools><input id=filter type=search placeholder="filter traces: service, span name, '
             'trace id, attribute value" aria-label="filter traces"> <button type=button id=expand>expand all'
             '</button> <button type=button id=collapse>collapse all</button></div>')
    return f"<section id=traces><h2>Traces</h2>{tools}{body}</section>"


def _ordered(tree: TraceTree) -> list[tuple[Record, int, bool]]:
    """(span, depth, parent missing) in waterfall order: depth-first from each root, children by start time."""
    rows: list[tuple[Record, int, bool]] = []
    seen: set[str] = set()

    def walk(span: Record, depth: int) -> None:
        if span["span_id"] in seen:  # a cycle in bad data must not hang the report
            return
        seen.add(span["span_id"])
        parent = span.get("parent_span_id") or ""
        rows.append((span, depth, bool(parent) and parent not in tree.by_id))
        for child in tree.children.get(span["span_id"], []):
            walk(child, depth + 1)

    for root in tree.roots():
        walk(root, 0)
    rows += [(s, 0, False) for s in tree.spans if s["span_id"] not in seen]
    return rows


def _trace(spans: Sequence[Record], focused: bool, colours: Mapping[str, str]) -> str:
    tree = TraceTree([dict(s) for s in spans])
    start = min(int(s.get("start_unix_nano", 0)) for s in tree.spans)
    end = max(int(s.get("end_unix_nano", 0)) for s in tree.spans)
    total = max(end - start, 1)
    trace_id = str(tree.spans[0]["trace_id"])
    services = list(dict.fromkeys(str(s.get("service_name")) for s in tree.spans))
    rows = [_span_row(span, depth, missing_parent, start, total, colours)
            for span, depth, missing_parent in _ordered(tree)]
    broken = sum(1 for s in tree.spans if s.get("parent_span_id") and s["parent_span_id"] not in tree.by_id)
    search = " ".join([trace_id, *services, *(str(s.get("name")) for s in tree.spans),
                       *(_json(s.get("attributes", {})) for s in tree.spans)]).lower()
    badges = ("<span class='badge focus'>this test's trace</span>" if focused else "") + (
        f"<span class='badge bad'>{broken} span(s) with a missing parent</span>" if broken else "")
    ticks = "".join(f"<span style='left:{p}%'>{total * p / 100 / 1e6:.1f} ms</span>" for p in (0, 25, 50, 75, 100))
    return (f"<article class=trace id='trace-{_e(trace_id)}' data-trace-id='{_e(trace_id)}' "
            f"data-focus='{'true' if focused else 'false'}' data-search='{_e(search)}'>"
            f"<h3><code>{_e(trace_id)}</code> · {len(tree.spans)} spans · {_e(' → '.join(services))} · "
            f"{total / 1e6:.1f} ms · {_e(_when_ns(start))} UTC {badges}</h3>"
            "<div class='row head'><span>service</span><span>span name</span><span>kind</span>"
            f"<span class=dur>duration</span><span class='lane axis'>{ticks}</span></div>"
            + "".join(rows) + "</article>")


def _span_row(span: Record, depth: int, missing_parent: bool, start: int, total: int,
              colours: Mapping[str, str]) -> str:
    begin, finish = int(span.get("start_unix_nano", 0)), int(span.get("end_unix_nano", 0))
    left = max(0.0, (begin - start) / total * 100)
    width = min(max((finish - begin) / total * 100, 0.4), 100 - left)
    service = str(span.get("service_name"))
    colour = colours.get(service, PALETTE[-1])
    status = (span.get("status") or {}).get("code", "UNSET")
    css = "span" + (" error" if status == "ERROR" else "") + (" orphan" if missing_parent else "")
    marker = "<span class=warn title='parent span not stored'>⚠ parent missing</span>" if missing_parent else ""
    return (f"<details class='{css}' data-service='{_e(service)}' data-name='{_e(span.get('name'))}' "
            f"data-span-id='{_e(span.get('span_id'))}'><summary class=row>"
            f"<span class=svc style='--c:{colour}'>{_e(service)}</span>"
            f"<span class=name style='padding-left:{depth * 14}px'>{_e(span.get('name'))}{marker}</span>"
            f"<span class=kind>{_e(span.get('kind'))}</span>"
            f"<span class=dur>{(finish - begin) / 1e6:.2f} ms</span>"
            f"<span class=lane><span class=bar style='left:{left:.3f}%;width:{width:.3f}%;--c:{colour}'>"
            f"</span></span></summary>{_span_details(span)}</details>")


def _kv_table(values: Mapping[str, Any]) -> str:
    if not values:
        return "<p class=empty>none</p>"
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v if isinstance(v, str) else _json(v))}</td></tr>"
                   for k, v in sorted(values.items()))
    return f"<table class=kv>{rows}</table>"


def _span_details(span: Record) -> str:
    status = span.get("status") or {}
    ids = {"trace_id": span.get("trace_id"), "span_id": span.get("span_id"),
           "parent_span_id": span.get("parent_span_id") or "(root)",
           "status": f"{status.get('code', '')} {status.get('message', '')}".strip(),
           "start": _when_ns(span.get("start_unix_nano")) + " UTC", "received": _when(span.get("received_at")),
           "scope": f"{(span.get('scope') or {}).get('name', '')} {(span.get('scope') or {}).get('version', '')}"}
    events = "".join(f"<li>{_e(_when_ns(ev.get('time_unix_nano')))} <b>{_e(ev.get('name'))}</b> "
                     f"{_e(_short(ev.get('attributes', {})))}</li>" for ev in span.get("events") or [])
    return ("<div class=detail><div><h4>span</h4>" + _kv_table(ids) + "</div>"
            "<div><h4>attributes</h4>" + _kv_table(span.get("attributes") or {}) + "</div>"
            "<div><h4>resource</h4>" + _kv_table(span.get("resource") or {}) + "</div>"
            + (f"<div><h4>events</h4><ul>{events}</ul></div>" if events else "") + "</div>")


# --- metrics, logs, rejections, stats -------------------------------------------------------------------------------

def _table(section: str, heading: str, columns: Sequence[str], rows: Sequence[Sequence[str]], empty: str,
           wide: int | None = None) -> str:
    """A scrolling table; every column but ``wide`` (an index) keeps its cells on one line."""
    if not rows:
        return f"<section id={section}><h2>{_e(heading)}</h2><p class=empty>{_e(empty)}</p></section>"
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" if index == wide else f"<td class=nowrap>{cell}</td>"
                                    for index, cell in enumerate(row)) + "</tr>" for row in rows)
    return (f"<section id={section}><h2>{_e(heading)}</h2>"
            f"<div class=scroll><table class=grid><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            "</section>")


def _point_value(point: Record) -> str:
    if point.get("value") is not None:
        return _e(point["value"])
    parts = [f"{key}={point[key]}" for key in ("count", "sum", "min", "max") if point.get(key) is not None]
    return _e(" ".join(parts))


def _metrics_section(points: Sequence[Record]) -> str:
    ordered = sorted(points, key=lambda p: (str(p.get("name")), int(p.get("time_unix_nano") or 0)))
    rows = [[f"<code>{_e(p.get('name'))}</code>", _e(p.get("type")),
             _e(p.get("temporality") or ""), _e(_short(p.get("attributes", {}), 200)),
             _e(_when_ns(p.get("start_unix_nano"))), _e(_when_ns(p.get("time_unix_nano"))), _point_value(p)]
            for p in ordered]
    return _table("metrics", "Metric points", ("name", "type", "temporality", "attributes", "start", "time",
                                               "value"), rows, "No metric points reached the sink in this window.",
                  wide=3)


def _logs_section(records: Sequence[Record], shown_traces: set[str]) -> str:
    rows = []
    for record in sorted(records, key=lambda r: int(r.get("time_unix_nano") or r.get("observed_time_unix_nano") or 0)):
        trace_id = str(record.get("trace_id") or "")
        link = (f"<a href='#trace-{_e(trace_id)}'><code>{_e(trace_id)}</code></a>" if trace_id in shown_traces
                else f"<code>{_e(trace_id) or '—'}</code>")
        body = record.get("body")
        rows.append([_e(_when_ns(record.get("time_unix_nano") or record.get("observed_time_unix_nano"))),
                     _e(record.get("severity_text") or record.get("severity_number") or ""), link,
                     "yes" if record.get("linkable") else "no",
                     f"<details><summary>{_e(_short(body, 160))}</summary>"
                     f"{_kv_table(record.get('attributes') or {})}</details>"])
    return _table("logs", "Log records", ("time", "severity", "trace_id", "linkable", "body (click: attributes)"),
                  rows, "No log records reached the sink in this window.", wide=4)


def _rejections_section(rejections: Sequence[Record]) -> str:
    rows = [[_e(_when(r.get("at"))), _e(r.get("signal") or ""), _e(r.get("http_status") or ""),
             f"<b>{_e(r.get('reason'))}</b>", _e(r.get("name") or ""), _e(r.get("items") or ""),
             _e(_short(r.get("message") or "", 400))] for r in rejections]
    return _table("rejections", "Rejected by the sink", ("at", "signal", "HTTP", "reason", "metric", "items",
                                                          "message"), rows, "The sink rejected nothing in this window.",
                  wide=6)


def _stats_section(stats: Mapping[str, Any]) -> str:
    keys = sorted({k for values in stats.values() if isinstance(values, Mapping) for k in values})
    rows = [[_e(signal), *(_e(values.get(k, "")) for k in keys)]
            for signal, values in sorted(stats.items()) if isinstance(values, Mapping)]
    return _table("stats", "Sink stats (whole run)", ("signal", *keys), rows, "no stats in the dump")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>{title}</title><style>{css}</style></head>
<body><header>{header}{nav}</header><main>
{body}
</main><script>{js}</script></body></html>
"""

_CSS = """
:root{--fg:#1d232a;--muted:#66707a;--line:#e3e7eb;--bg:#fff;--soft:#f5f7f9}
*{box-sizing:border-box}body{margin:0;font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}header{padding:12px 20px;border-bottom:1px solid var(--line);
background:var(--soft);position:sticky;top:0;z-index:2}h1{font-size:18px;margin:0 0 4px}h2{font-size:16px;
margin:22px 0 8px}h3{font-size:13px;font-weight:600;margin:0 0 6px}h4{margin:4px 0;font-size:12px;color:var(--muted)}
main{padding:0 20px 40px}nav a{margin-right:14px}.meta{margin:0 0 6px;color:var(--muted)}
.notes{margin:4px 0;color:#8a5300}code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
pre.failure,pre.full{background:#fff4f4;border:1px solid #f3c2c2;padding:10px;white-space:pre-wrap;
max-height:420px;overflow:auto}pre.full{background:var(--soft);border-color:var(--line)}.empty{color:var(--muted)}
.tools{margin-bottom:8px}.tools input{width:420px;padding:4px 6px}td.nowrap{white-space:nowrap}
article.trace{border:1px solid var(--line);border-radius:6px;padding:8px 10px;margin:0 0 12px}
.row{display:grid;grid-template-columns:150px minmax(220px,1.2fr) 90px 80px 2fr;gap:8px;align-items:center;
padding:2px 0;cursor:pointer;list-style:none}.row::-webkit-details-marker{display:none}
.row.head{font-weight:600;color:var(--muted);cursor:default;border-bottom:1px solid var(--line)}
details.span>summary:hover{background:var(--soft)}.svc{border-left:4px solid var(--c);
padding-left:6px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}.name{white-space:nowrap;overflow:hidden;
text-overflow:ellipsis}.kind{color:var(--muted);font-size:11px}.dur{text-align:right;font-variant-numeric:tabular-nums}
.lane{position:relative;height:14px;background:var(--soft);border-radius:2px}.lane.axis{background:none;height:16px}
.lane.axis span{position:absolute;transform:translateX(-50%);font-size:10px;color:var(--muted);white-space:nowrap}
.lane.axis span:first-child{transform:none}.lane.axis span:last-child{transform:translateX(-100%)}
.bar{position:absolute;top:2px;bottom:2px;background:var(--c);border-radius:2px;min-width:2px}
details.error .bar{background:#d33}details.error .name{color:#b00}details.orphan .name{color:#8a5300}
.warn{margin-left:6px;font-size:11px;color:#8a5300}.badge{margin-left:8px;padding:1px 6px;border-radius:8px;
font-size:11px;font-weight:500}.badge.focus{background:#e4efff;color:#1b4fa0}.badge.bad{background:#fff0d6;
color:#8a5300}.detail{display:flex;flex-wrap:wrap;gap:16px;padding:6px 0 10px 16px;border-bottom:1px dashed
var(--line)}.detail>div{min-width:260px;max-width:560px}table.kv{border-collapse:collapse}table.kv th{text-align:left;
font-weight:500;color:var(--muted);padding:1px 10px 1px 0;vertical-align:top;white-space:nowrap}
table.kv td{font:12px ui-monospace,Menlo,monospace;word-break:break-all}.scroll{overflow:auto;max-height:520px;
border:1px solid var(--line)}table.grid{border-collapse:collapse;width:100%}table.grid th{position:sticky;top:0;
background:var(--soft);text-align:left}table.grid th,table.grid td{padding:3px 8px;border-bottom:1px solid
var(--line);vertical-align:top}table.grid td{word-break:break-word}.hidden{display:none}
"""

_JS = """
(function(){
  var box=document.getElementById('filter');
  if(box){box.addEventListener('input',function(){
    var q=box.value.trim().toLowerCase();
    document.querySelectorAll('article.trace').forEach(function(a){
      a.classList.toggle('hidden', q!=='' && a.getAttribute('data-search').indexOf(q)<0);});});}
  function all(open){document.querySelectorAll('details.span').forEach(function(d){d.open=open;});}
  var e=document.getElementById('expand'), c=document.getElementById('collapse');
  if(e){e.addEventListener('click',function(){all(true);});}
  if(c){c.addEventListener('click',function(){all(false);});}
  if(location.hash){var t=document.getElementById(location.hash.slice(1));if(t){t.scrollIntoView();}}
})();
"""


# ------------------------------------------------------------------------------------------------------ live view

class LiveViewServer:
    """Serves the page for whatever ``dump_provider()`` returns now, at ``.url`` (127.0.0.1, a free port).

    ``otelgate up`` starts one over ``stack.sink.dump``; the page reloads itself every ``refresh_seconds``.
    """

    def __init__(self, dump_provider: DumpProvider, *, host: str = "127.0.0.1", port: int = 0,
                 title: str = "live view", refresh_seconds: float = 5.0, secrets: Iterable[str] = ()) -> None:
        page = _page_function(dump_provider, title, refresh_seconds, tuple(secrets))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/", "/index.html"):
                    self._answer(404, "text/plain; charset=utf-8", b"not found: the view is at /\n")
                    return
                status, body = page()
                self._answer(status, "text/html; charset=utf-8", body)

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: `otelgate up` prints its own status
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> LiveViewServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="otelgate-live-view", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LiveViewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _page_function(dump_provider: DumpProvider, title: str, refresh_seconds: float | None,
                   secrets: tuple[str, ...]) -> Callable[[], tuple[int, bytes]]:
    def page() -> tuple[int, bytes]:
        try:
            dump = dump_provider()
        except Exception as exc:  # the sink may be down; say so on the page instead of failing the request
            text = html.escape(f"could not read the sink's dump: {exc!r}")
            return 503, f"<!doctype html><meta charset=utf-8><title>otelgate</title><p>{text}</p>".encode()
        return 200, render_html(dump, title=title, refresh_seconds=refresh_seconds, secrets=secrets).encode()

    return page


def live_view_app(dump_provider: DumpProvider, *, title: str = "live view", refresh_seconds: float | None = 5.0,
                  secrets: Iterable[str] = ()) -> Callable[..., Any]:
    """The page as a minimal ASGI app (mountable in the sink's Starlette app, e.g. ``Mount("/view", app)``).

    ``dump_provider`` is called per request, in a worker thread (it may do blocking I/O).
    """
    page = _page_function(dump_provider, title, refresh_seconds, tuple(secrets))

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        import asyncio

        if scope["type"] != "http":
            return
        status, body = await asyncio.to_thread(page)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app
