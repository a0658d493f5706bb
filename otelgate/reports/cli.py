"""``otelgate report DUMP.json [-o out.html]``: render the self-contained HTML view of a saved sink dump."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from otelgate.reports.html import MAX_ROWS, MAX_TRACES, render_html
from otelgate.reports.replay import DumpError, load_dump


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dump", type=Path, help="a sink dump (GET /api/dump, or sink-dump.json from artifacts)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="where to write the page (default: the dump's name with .html)")
    parser.add_argument("--trace", action="append", default=[], metavar="TRACE_ID",
                        help="show this trace first (repeatable)")
    parser.add_argument("--max-traces", type=int, default=MAX_TRACES, help="most traces to draw (default %(default)s)")
    parser.add_argument("--max-rows", type=int, default=MAX_ROWS,
                        help="most metric points / log records / rejections listed (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    try:
        dump = load_dump(args.dump)
    except DumpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output = args.output or args.dump.with_suffix(".html")
    page = render_html(dump, title=args.dump.name, focus_trace_ids=[t.lower() for t in args.trace],
                       max_traces=args.max_traces, max_rows=args.max_rows)
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote {output} ({len(page.encode()) / 1024:.0f} KiB; {len(dump['spans'])} spans, "
          f"{len(dump['metric_points'])} metric points, {len(dump['logs'])} log records, "
          f"{len(dump['rejections'])} rejections)")
    return 0
