"""The repository stands alone: every link and pointer in it resolves inside it.

Scanned: *.md, *.py, *.yaml, *.yml and *.toml files, Dockerfiles and .ci/run of the checkout (build, cache and
virtualenv folders and git-ignored files excluded).
A finding is reported for
- a relative markdown link (``[text](path#anchor)``) whose file or heading anchor does not exist;
- a repository reference ``docs/<file>.md#anchor`` (in code, configs and docs) whose file or anchor does not exist,
  or the short form ``<file>.md#anchor`` for a file of docs/reference/ whose anchor does not exist, or (in code) a
  bare ``(#anchor-name)`` that none of the docs/reference files named in the same file offers;
- a section-sign pointer (the paragraph sign, U+00A7) or a numbered pointer ("reference 7.2", "gotcha 16"), which
  point into documents that are not part of the repo;
- a path into the team's shared folder, a mention of the old out-of-repo notes by file name, or an absolute machine
  path (in the /work, /root and /home trees anywhere; in /tmp in markdown).

This file is excluded from the scan: it necessarily spells the patterns it looks for.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()

SCANNED_SUFFIXES = frozenset({".md", ".py", ".yaml", ".yml", ".toml"})
SCANNED_NAMES = frozenset({"Dockerfile", "run", "noxfile.py"})  # run: .ci/run, the CI entry point
SKIPPED_DIRS = frozenset({
    ".git", ".nox", ".venv", "venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", "node_modules",
    "artifacts", "build", "dist", "_build", ".hypothesis",
})

SECTION_SIGN = "\u00a7"
# Spelled in parts so that a plain grep of the repository for these paths finds nothing, not even this file.
SHARED_DIR = "shared" + "/"
WORK_DIR, ROOT_DIR, HOME_DIR = "/" + "work/", "/" + "root/", "/" + "home/"
# The notes the code used to point into; they never were part of the repository.
OLD_NOTE_NAMES = ("kong-3.9-telemetry.md", "dynatrace-otlp-ingest.md", "prior-art.md", "ARCHITECTURE.md")

_MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_MD_REFDEF = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
# docs/<file>.md[#anchor] of this repository; a name followed by ":<line>" is an upstream citation, not ours
_REPO_DOC_REF = re.compile(r"(?<![\w./-])(docs/[\w./-]+?\.md)(#[\w-]+)?(?![\w/-])(?!:\d)")
# short form for code comments: "kong-3.9.md#sampler" names a file of docs/reference/
_SHORT_REFERENCE_REF = re.compile(r"(?<![\w./-])([\w.-]+\.md)#([\w-]+)")
# a bare "#anchor-name" in code, resolved against the docs/reference files the same file names
_BARE_ANCHOR = re.compile(r"(?<=[(\s,])#([a-z][a-z0-9_]*-[a-z0-9_-]*[a-z0-9_])")
_UPSTREAM_PREFIX = re.compile(r"@[\w./-]+\s$")  # "owner/repo@tag " right before a path cites upstream
_SHARED_PATH = re.compile(r"(?<![\w.-])(?:\.\./)*" + re.escape(SHARED_DIR))
_ABS_PATH_ANYWHERE = re.compile(r"(?<![\w.~-])(?:" + re.escape(WORK_DIR) + "|" + re.escape(ROOT_DIR) + r")"
                                r"|(?<![\w.~-])" + re.escape(HOME_DIR) + r"[\w.-]+/")
_ABS_TMP = re.compile(r"(?<![\w.~-])/tmp/")
# numbered pointers into the old notes: "Kong reference 7.2", "gotcha 16"
_NUMBERED_POINTER = re.compile(r"\breference\s+\d+(?:\.\d+)*\b|\bgotcha\s+\d+", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    problem: str

    def __str__(self) -> str:
        try:
            shown = self.path.relative_to(REPO)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}: {self.problem}"


# ------------------------------------------------------------------------------------------------ headings and anchors

def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation except - and _ removed,
    each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images keep their text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def markdown_anchors(text: str) -> set[str]:
    """Every anchor a markdown document offers: its headings (duplicates get -1, -2, …) and explicit <a id>."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        match = _HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
        anchors.update(_HTML_ANCHOR.findall(line))
    return anchors


class AnchorIndex:
    """Anchors per markdown file, read once."""

    def __init__(self) -> None:
        self._cache: dict[Path, set[str]] = {}

    def anchors(self, path: Path) -> set[str]:
        if path not in self._cache:
            self._cache[path] = markdown_anchors(path.read_text(encoding="utf-8"))
        return self._cache[path]


# ------------------------------------------------------------------------------------------------ the checks

def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target))  # http:, https:, mailto:, …


def _check_target(source: Path, line: int, target_file: Path, anchor: str, shown: str,
                  index: AnchorIndex, root: Path) -> Iterator[Finding]:
    try:
        target_file.resolve().relative_to(root.resolve())
    except ValueError:
        yield Finding(source, line, f"link leaves the repository: {shown}")
        return
    if not target_file.exists():
        yield Finding(source, line, f"link to a missing file: {shown}")
        return
    if anchor:
        if target_file.suffix != ".md" or target_file.is_dir():
            yield Finding(source, line, f"anchor on a file that is not markdown: {shown}")
        elif anchor not in index.anchors(target_file):
            yield Finding(source, line, f"no heading for anchor #{anchor} in {target_file.name}: {shown}")


def check_markdown_links(path: Path, text: str, index: AnchorIndex, root: Path) -> Iterator[Finding]:
    """Relative markdown links (inline and reference definitions) of one file."""
    matches = [(m.start(1), m.group(1)) for m in _MD_LINK.finditer(text)]
    if path.suffix == ".md":
        matches += [(m.start(1), m.group(1)) for m in _MD_REFDEF.finditer(text)]
    for offset, target in matches:
        if _is_external(target):
            continue
        if path.suffix != ".md" and ".md" not in target:
            continue  # in code, only links that name a markdown file are links (not f-string fragments)
        line = _line_of(text, offset)
        if target.startswith("/"):
            yield Finding(path, line, f"absolute link: {target}")
            continue
        file_part, _, anchor = target.partition("#")
        target_file = path if not file_part else (path.parent / file_part)
        yield from _check_target(path, line, target_file, anchor, target, index, root)


def check_repo_doc_refs(path: Path, text: str, index: AnchorIndex, root: Path) -> Iterator[Finding]:
    """``docs/<file>.md[#anchor]`` mentions, read from the repository root."""
    for match in _REPO_DOC_REF.finditer(text):
        if _UPSTREAM_PREFIX.search(text[max(0, match.start() - 120):match.start()]):
            continue
        anchor = (match.group(2) or "").lstrip("#")
        yield from _check_target(path, _line_of(text, match.start()), root / match.group(1), anchor,
                                 match.group(0), index, root)


def check_short_reference_refs(path: Path, text: str, index: AnchorIndex, root: Path) -> Iterator[Finding]:
    """``<file>.md#anchor`` without a folder, where ``<file>.md`` is one of docs/reference/: the anchor must exist."""
    reference_dir = root / "docs" / "reference"
    for match in _SHORT_REFERENCE_REF.finditer(text):
        target = reference_dir / match.group(1)
        if target.is_file() and match.group(2) not in index.anchors(target):
            problem = f"no heading for anchor #{match.group(2)} in docs/reference/{match.group(1)}: {match.group(0)}"
            yield Finding(path, _line_of(text, match.start()), problem)


def check_bare_anchors(path: Path, text: str, index: AnchorIndex, root: Path) -> Iterator[Finding]:
    """In code, ``(#anchor-name)`` next to a named docs/reference file: the anchor must be in one of the named files."""
    if path.suffix == ".md":
        return
    reference_dir = root / "docs" / "reference"
    named = [f for f in sorted(reference_dir.glob("*.md")) if f.name in text] if reference_dir.is_dir() else []
    if not named:
        return
    offered = set().union(*(index.anchors(f) for f in named))
    for match in _BARE_ANCHOR.finditer(text):
        if match.group(1) not in offered:
            names = ", ".join(f.name for f in named)
            yield Finding(path, _line_of(text, match.start()), f"no heading for anchor #{match.group(1)} in {names}")


def check_outside_pointers(path: Path, text: str, present_names: set[str]) -> Iterator[Finding]:
    """Section signs, numbered pointers, shared-folder paths, old note names and absolute machine paths."""
    for number, line in enumerate(text.splitlines(), start=1):
        if SECTION_SIGN in line:
            yield Finding(path, number, f"section pointer into a document outside the repo: {line.strip()[:100]}")
        if _NUMBERED_POINTER.search(line):
            yield Finding(path, number, f"numbered pointer into notes outside the repo: {line.strip()[:100]}")
        if _SHARED_PATH.search(line):
            yield Finding(path, number, f"path to {SHARED_DIR} (not in the repo): {line.strip()[:100]}")
        for name in OLD_NOTE_NAMES:
            if name in line and name not in present_names:
                yield Finding(path, number, f"mentions {name}, which is not in the repo: {line.strip()[:100]}")
        if _ABS_PATH_ANYWHERE.search(line) or (path.suffix == ".md" and _ABS_TMP.search(line)):
            yield Finding(path, number, f"absolute machine path: {line.strip()[:100]}")


def scanned_files(root: Path) -> Iterator[Path]:
    """The files to check, in a stable order; skipped folders are pruned, not walked."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = Path(folder) / name
            if (path.suffix in SCANNED_SUFFIXES or name in SCANNED_NAMES) and path.resolve() != THIS_FILE:
                yield path


def not_ignored(paths: Iterable[Path], root: Path) -> list[Path]:
    """Drop files git ignores (generated reports, caches): they are not part of the repository."""
    files = list(paths)
    if not (root / ".git").exists() or not files:
        return files
    listing = "\n".join(str(p.relative_to(root)) for p in files)
    result = subprocess.run(["git", "-C", str(root), "check-ignore", "--stdin"], input=listing, text=True,
                            capture_output=True, timeout=60, check=False)
    ignored = set(result.stdout.splitlines())
    return [p for p in files if str(p.relative_to(root)) not in ignored]


def check_files(paths: Iterable[Path], root: Path) -> list[Finding]:
    """All findings, each reported once (a link can also read as a ``docs/…`` mention on the same line)."""
    files = not_ignored(paths, root)
    present_names = {path.name for path in files}
    index = AnchorIndex()
    findings: dict[tuple[Path, int, str], Finding] = {}
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for finding in (*check_markdown_links(path, text, index, root), *check_repo_doc_refs(path, text, index, root),
                        *check_short_reference_refs(path, text, index, root),
                        *check_bare_anchors(path, text, index, root),
                        *check_outside_pointers(path, text, present_names)):
            findings.setdefault((finding.path, finding.line, finding.problem), finding)
    return list(findings.values())


# ------------------------------------------------------------------------------------------------ the repository

def test_every_link_and_pointer_in_the_repository_resolves_inside_it() -> None:
    files = list(scanned_files(REPO))
    assert any(p.name == "README.md" for p in files), "the scan found no README.md: wrong root?"
    assert any(p.parent.name == "reference" for p in files), "docs/reference/ was not scanned"
    findings = check_files(files, REPO)
    assert not findings, f"{len(findings)} unresolved link(s) or outside pointer(s):\n" + "\n".join(
        str(f) for f in findings)


def test_the_reference_documents_exist_with_the_anchors_code_links_to() -> None:
    index = AnchorIndex()
    expected = {
        "kong-3.9.md": {"sampler", "ratio-sampler", "propagation", "span-names-and-kinds", "serializer-fields",
                        "custom_fields_by_lua", "exposition-format", "queue-defaults"},
        "dynatrace-otlp.md": {"metric-temporality-rules", "status-codes", "size-limits", "log-attribute-flattening",
                              "behaviour-matrix", "otlphttp-protocol-rules"},
        "otel-operator-and-collector.md": {"python-injection", "collector-resource-rendering",
                                           "collector-components", "tcp_log-receiver"},
    }
    for name, anchors in expected.items():
        path = REPO / "docs" / "reference" / name
        assert path.is_file(), f"missing {path.relative_to(REPO)}"
        missing = anchors - index.anchors(path)
        assert not missing, f"{name} lacks the anchors {sorted(missing)}"


# ------------------------------------------------------------------------------------------------ the checker itself

def _repo(tmp_path: Path, files: dict[str, str]) -> list[Finding]:
    for relative, content in files.items():
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    return check_files(scanned_files(tmp_path), tmp_path)


def test_checker_accepts_links_that_resolve(tmp_path: Path) -> None:
    findings = _repo(tmp_path, {
        "README.md": "See [ref](docs/ref.md#the-sampler) and [top](#readme) and [web](https://example.com/x#y).\n"
                     "# README\n",
        "docs/ref.md": "# Ref\n## The `sampler`\n## Twice\n## Twice\n",
        "docs/other.md": "[dup](ref.md#twice-1) [self](#other) [dir](../docs)\n# Other\n",
        "docs/reference/k.md": "# K\n## Sampler\n",
        "pkg/mod.py": '"""Pinned to docs/ref.md#the-sampler and [ref](../docs/ref.md#twice) (k.md#sampler)."""\n'
                      'LINK = f"[{name}]({url})"\n',
    })
    assert findings == []


@pytest.mark.parametrize(("files", "expected"), [
    ({"README.md": "[x](docs/missing.md)\n"}, "missing file: docs/missing.md"),
    ({"README.md": "[x](docs/ref.md#nope)\n", "docs/ref.md": "# Ref\n"}, "no heading for anchor #nope"),
    ({"README.md": "[x](#not-here)\n# Title\n"}, "no heading for anchor #not-here"),
    ({"README.md": "[x]: docs/gone.md\n"}, "missing file: docs/gone.md"),
    ({"a/b.py": "# see docs/ref.md#absent\n", "docs/ref.md": "# Ref\n"}, "no heading for anchor #absent"),
    ({"a/b.yaml": "# see docs/none.md\n"}, "missing file: docs/none.md"),
    ({"a/c.toml": "# [x](../../outside.md)\n"}, "leaves the repository"),
    ({"README.md": "[x](/etc/passwd.md)\n"}, "absolute link"),
    ({"README.md": "```\n# Fenced\n```\n[x](#fenced)\n"}, "no heading for anchor #fenced"),
    ({"m.py": "# (kong-3.9.md#gone)\n", "docs/reference/kong-3.9.md": "# Kong\n## Sampler\n"},
     "no heading for anchor #gone in docs/reference/kong-3.9.md"),
    ({"m.py": '"""Pinned to kong-3.9.md."""\nX = 1  # (#old-section)\n', "docs/reference/kong-3.9.md": "# Kong\n"},
     "no heading for anchor #old-section in kong-3.9.md"),
])
def test_checker_reports_a_broken_link(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    findings = _repo(tmp_path, files)
    assert len(findings) == 1, findings
    assert expected in findings[0].problem


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("mod.py", f"# Kong reference {SECTION_SIGN}7.2\n", "section pointer"),
    ("doc.md", f"read ../{SHARED_DIR}design/notes.md\n", SHARED_DIR),
    ("conf.yaml", f"# see {SHARED_DIR}reference/x.md\n", SHARED_DIR),
    ("doc.md", f"run `cd {WORK_DIR}main && make`\n", "absolute machine path"),
    ("mod.py", f"CACHE = '{ROOT_DIR}.cache/x'\n", "absolute machine path"),
    ("doc.md", f"logs go to {HOME_DIR}alice/logs\n", "absolute machine path"),
    ("doc.md", "otelgate up --workdir /tmp/x\n", "absolute machine path"),
    ("mod.py", "# as prior-art.md says\n", "prior-art.md"),
    ("Dockerfile", f"COPY {WORK_DIR}main/x /x\n", "absolute machine path"),
    ("mod.py", '"""the ratio sampler (Kong reference 7.2)"""\n', "numbered pointer"),
    ("doc.md", "retried for 60 s (gotcha 16)\n", "numbered pointer"),
], ids=["section-sign", "shared-in-md", "shared-in-yaml", "work-path", "root-path", "home-path", "tmp-in-md",
        "old-note-name", "work-path-dockerfile", "numbered-reference", "numbered-gotcha"])
def test_checker_reports_a_pointer_outside_the_repository(tmp_path: Path, name: str, content: str,
                                                          expected: str) -> None:
    findings = _repo(tmp_path, {name: content})
    assert [f.problem for f in findings if expected in f.problem], findings
    assert findings[0].line == 1


def test_tmp_paths_in_code_are_not_doc_findings(tmp_path: Path) -> None:
    assert _repo(tmp_path, {"mod.py": "DEFAULT = '/tmp/otelgate'\n"}) == []


def test_github_slug_matches_githubs_rules() -> None:
    assert github_slug("Span export and queue") == "span-export-and-queue"
    assert github_slug("`custom_fields_by_lua`") == "custom_fields_by_lua"
    assert github_slug("Resource, scope and attribute types") == "resource-scope-and-attribute-types"
    assert github_slug("OTLP/HTTP protocol rules") == "otlphttp-protocol-rules"
    assert github_slug("Kong's fixed test trace ids") == "kongs-fixed-test-trace-ids"
    assert github_slug("[Linked](x.md) heading") == "linked-heading"
