"""``artifacts/<test id>/``: everything a person needs to understand a failed check without rerunning it.

    failure.txt       the failure as pytest reported it
    traces.txt        the trace(s) of the test's requests as text trees (TraceTree.render)
    report.html       the self-contained HTML view (waterfalls, metric points, logs, rejections of the window)
    sink-dump.json    the sink's full dump plus the run's journal: input of `otelgate report` and `otelgate replay`
    diagnostics/      the stack's own diagnosis (process logs locally, pod diagnostics on a cluster)
    README.txt        what is where, and the commands to re-render or replay

Every file is scrubbed of the stack's token and of anything token-shaped (:mod:`otelgate.redact`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otelgate import topology
from otelgate.expect.logs import is_kong_access_log, request_id
from otelgate.expect.traces import TraceTree
from otelgate.redact import scrub_data, scrub_files, scrub_text
from otelgate.reports.html import Window, render_html
from otelgate.reports.journal import JOURNAL_KEY

EXTRA_TOKEN_ENV_VARS = ("OTELGATE_DT_API_TOKEN",)  # besides the deployment's token_env (otelgate.toml)
_HEX32 = re.compile(r"\b[0-9a-f]{32}\b")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 120


@dataclass(frozen=True)
class TestResult:
    """One test's result as the artifacts describe it."""

    test_id: str                 # pytest node id
    outcome: str                 # "failed" | "error" (in a fixture) | "passed"
    when: str                    # "setup" | "call" | "teardown"
    cause: str | None            # ExpectationFailed.cause, else the exception type; None when passed
    text: str                    # the failure text ("" when passed)
    summary: str                 # the exception in one message, e.g. "ExpectationFailed: [NO_TRACE] ..."
    window: Window               # the test's time window (unix ns)

    def journal_outcome(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "when": self.when, "cause": self.cause}


def folder_name(test_id: str) -> str:
    """A file-system-safe, stable folder name for a pytest node id."""
    name = _UNSAFE.sub("_", test_id.replace("::", "__").replace("/", "-")).strip("_.") or "test"
    if len(name) > MAX_NAME:
        import hashlib

        name = name[:MAX_NAME - 9] + "-" + hashlib.sha1(test_id.encode()).hexdigest()[:8]
    return name


def stack_secrets(stack: Any) -> list[str]:
    """The secrets a stack holds (its sink token) and token environment variables: never written."""
    found = [getattr(stack, attr, None) for attr in ("token", "_token", "api_token")]
    found += [os.environ.get(var) for var in (topology.current().token_env, *EXTRA_TOKEN_ENV_VARS)]
    return [s for s in found if isinstance(s, str) and len(s) >= 8]


def involved_trace_ids(dump: Mapping[str, Any], request_ids: Iterable[str], failure_text: str = "") -> list[str]:
    """Traces of the test: Kong roots of its requests, traces its access logs name, trace ids in the failure."""
    wanted = set(request_ids)
    stored = {str(s.get("trace_id")) for s in dump.get("spans", [])}
    found = [str(s["trace_id"]) for s in dump.get("spans", [])
             if s.get("name") == "kong" and (s.get("attributes") or {}).get("kong.request.id") in wanted]
    found += [str(r.get("trace_id")) for r in dump.get("logs", [])
              if is_kong_access_log(r) and request_id(r) in wanted and str(r.get("trace_id")) in stored]
    found += [t for t in _HEX32.findall(failure_text) if t in stored]
    return list(dict.fromkeys(found))


def render_trace_trees(dump: Mapping[str, Any], trace_ids: Sequence[str], request_ids: Sequence[str]) -> str:
    if not trace_ids:
        return (f"no trace of this test's {len(request_ids)} request(s) reached the sink\n"
                f"request ids (X-Kong-Request-Id): {', '.join(request_ids) or '<none recorded>'}\n")
    blocks = []
    for trace_id in trace_ids:
        spans: list[Mapping[str, Any]] = [s for s in dump.get("spans", []) if s.get("trace_id") == trace_id]
        blocks.append(TraceTree(spans).render())
    return "\n\n".join(blocks) + "\n"


def fetch_dump(stack: Any) -> tuple[dict[str, Any] | None, str]:
    try:
        return dict(stack.sink.dump()), ""
    except Exception as exc:  # the sink may be what broke; the other artifacts are still worth writing
        return None, f"could not fetch the sink's dump: {exc!r}"


def write_artifacts(root: Path, result: TestResult, stack: Any, *, journal: Mapping[str, Any] | None = None,
                    request_ids: Sequence[str] = (), extra_secrets: Iterable[str] = ()) -> Path:
    """Write ``root/<test id>/`` for ``result`` on ``stack``; return the folder (any earlier one is replaced)."""
    folder = Path(root) / folder_name(result.test_id)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    secrets = [*stack_secrets(stack), *extra_secrets]
    dump, dump_error = fetch_dump(stack)
    _write(folder / "failure.txt", scrub_text("\n\n".join(t for t in (result.summary, result.text) if t)
                                              or f"{result.test_id} {result.outcome}", secrets))
    if dump is not None:
        dump = scrub_data(dump, secrets)
        if journal is not None:
            # the journal holds node ids and request ids that replay matches exactly: known secrets only
            dump[JOURNAL_KEY] = scrub_data({**journal, "tests": [result.test_id],
                                            "outcomes": {result.test_id: result.journal_outcome()}}, secrets,
                                           patterns=False)
        _write(folder / "sink-dump.json", json.dumps(dump, indent=1, sort_keys=True, default=str))
        trace_ids = involved_trace_ids(dump, request_ids, f"{result.summary}\n{result.text}")
        _write(folder / "traces.txt", render_trace_trees(dump, trace_ids, list(request_ids)))
        _write(folder / "report.html", render_html(dump, title=result.test_id, window=result.window,
                                                   focus_trace_ids=trace_ids, failure=result.text or None,
                                                   failure_summary=result.summary or None, secrets=secrets))
    else:
        _write(folder / "sink-dump.error.txt", dump_error + "\n")
    _diagnose(stack, folder / "diagnostics")
    _write(folder / "README.txt", _readme(result, dump is not None))
    scrub_files(folder, secrets)
    return folder


def _diagnose(stack: Any, dest: Path) -> None:
    started = time.monotonic()
    try:
        stack.diagnose(dest)
    except Exception as exc:  # a broken diagnosis must not hide the other artifacts
        dest.mkdir(parents=True, exist_ok=True)
        _write(dest / "diagnose.error.txt", f"stack.diagnose() failed after {time.monotonic() - started:.1f}s: "
                                            f"{exc!r}\n")


def _readme(result: TestResult, have_dump: bool) -> str:
    lines = [f"otelgate artifacts for {result.test_id} ({result.outcome} in {result.when}"
             + (f", cause {result.cause})" if result.cause else ")"), "",
             "failure.txt     the failure as pytest reported it"]
    if have_dump:
        lines += ["traces.txt      the trace(s) of the test's requests as text trees",
                  "report.html     open in any browser (self-contained, no network)",
                  "sink-dump.json  everything the sink held, plus the run's journal", "",
                  "re-render:  otelgate report sink-dump.json -o report.html",
                  "replay:     otelgate replay sink-dump.json        (re-runs this test's assertions, no stack)"]
    else:
        lines.append("sink-dump.error.txt  why there is no dump (the sink was unreachable)")
    lines.append("diagnostics/    the stack's own diagnosis (process or pod logs, configs)")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
