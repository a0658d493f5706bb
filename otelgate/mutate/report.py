"""The mutation report: ``report.json`` (everything), ``report.md`` (score, survivors with why, a table of every
mutant with its verdict and killer) and ``report.html`` (the same table)."""

from __future__ import annotations

import html
import json
import os
import platform
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otelgate.mutate.runner import EQUIVALENT, KILLED, SURVIVED, Verdict


@dataclass(frozen=True)
class Summary:
    total: int
    killed: int
    survived: int
    equivalent: int
    catalog_size: int
    seconds: float
    mean_seconds: float

    @property
    def score(self) -> float:
        """Killed / non-equivalent mutants (1.0 when there are none)."""
        judged = self.killed + self.survived
        return self.killed / judged if judged else 1.0


def summarize(verdicts: Sequence[Verdict], catalog_size: int, seconds: float) -> Summary:
    counts = Counter(v.verdict for v in verdicts)
    return Summary(len(verdicts), counts[KILLED], counts[SURVIVED], counts[EQUIVALENT], catalog_size,
                   round(seconds, 1), round(sum(v.seconds for v in verdicts) / len(verdicts), 2) if verdicts else 0.0)


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{platform.node()} ({os.cpu_count()} cores, {python}, load average {load:.1f} at the end)"


def _score_line(s: Summary) -> str:
    return (f"score {s.score:.0%}: {s.killed} of {s.killed + s.survived} non-equivalent mutants killed "
            f"({s.equivalent} equivalent; {s.total} judged of a catalog of {s.catalog_size}); "
            f"{s.seconds:.0f} s in all, mean {s.mean_seconds:.1f} s per mutant")


def _killers(verdicts: Sequence[Verdict]) -> str:
    counts = Counter(v.killer for v in verdicts if v.verdict == KILLED)
    return ", ".join(f"{killer} {n}" for killer, n in counts.most_common())


def render_markdown(verdicts: Sequence[Verdict], summary: Summary, meta: Mapping[str, Any]) -> str:
    lines = ["# otelgate mutation report", "",
             f"- {_score_line(summary)}",
             f"- killed by: {_killers(verdicts) or 'nothing'}",
             *(f"- {key}: {value}" for key, value in meta.items()), ""]
    survivors = [v for v in verdicts if v.verdict == SURVIVED]
    lines += ["## Survivors (gaps)", ""]
    lines += [f"- `{v.mutant}` — {v.description}: {v.why}" for v in survivors] or ["none"]
    lines += ["", "## Every mutant", "", "| mutant | what | verdict | killer | cause / why | s |",
              "|---|---|---|---|---|---|"]
    for v in verdicts:
        detail = (f"{v.cause}: {v.evidence}" if v.verdict == KILLED else v.why).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{v.mutant}` | {v.description.replace('|', '/')} | {v.verdict} | {v.killer or ''} | "
                     f"{detail[:300]} | {v.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def render_html(verdicts: Sequence[Verdict], summary: Summary, meta: Mapping[str, Any]) -> str:
    esc = html.escape
    rows = "\n".join(
        f"<tr class='{esc(v.verdict)}'><td><code>{esc(v.mutant)}</code></td><td>{esc(v.description)}</td>"
        f"<td>{esc(v.verdict)}</td><td>{esc(v.killer or '')}</td>"
        f"<td>{esc((f'{v.cause}: {v.evidence}' if v.verdict == KILLED else v.why)[:600])}</td>"
        f"<td>{v.seconds:.1f}</td></tr>" for v in verdicts)
    meta_items = "".join(f"<li>{esc(str(k))}: {esc(str(v))}</li>" for k, v in meta.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>otelgate mutation report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px;vertical-align:top;font-size:13px}}tr.survived{{background:#fdd}}tr.killed{{background:#efe}}
tr.equivalent{{background:#eee}}</style></head><body>
<h1>otelgate mutation report</h1><p>{esc(_score_line(summary))}</p><p>killed by: {esc(_killers(verdicts))}</p>
<ul>{meta_items}</ul>
<table><thead><tr><th>mutant</th><th>what</th><th>verdict</th><th>killer</th><th>cause / why</th><th>s</th></tr>
</thead><tbody>
{rows}
</tbody></table></body></html>
"""


def write(dest: Path, verdicts: Sequence[Verdict], summary: Summary, meta: Mapping[str, Any]) -> Path:
    """``dest``/report.json, report.md, report.html; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    document = {"summary": {**summary.__dict__, "score": summary.score}, "meta": dict(meta),
                "verdicts": [v.as_dict() for v in verdicts]}
    (dest / "report.json").write_text(json.dumps(document, indent=1) + "\n")
    (dest / "report.md").write_text(render_markdown(verdicts, summary, meta))
    (dest / "report.html").write_text(render_html(verdicts, summary, meta))
    return dest


def default_dest(root: Path = Path("reports")) -> Path:
    return root / f"mutation-{time.strftime('%Y%m%d-%H%M%S')}"
