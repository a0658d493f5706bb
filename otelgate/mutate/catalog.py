"""Every meaningful single mutation of a deployment's manifests: each operator of :mod:`otelgate.mutate.operators`
applied to the document it targets, found in the manifests folder itself (not a hand-written list).

Targets: the ``OpenTelemetryCollector`` resource's ``spec.config`` in ``otel/collector.yaml``, ``kong/kong.yaml``,
and the ``Instrumentation`` resource (the first file under the folder that holds one). A :class:`Mutant` knows how
to write its whole file back (other documents of a multi-document file unchanged).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from otelgate.mutate.operators import COLLECTOR, INSTRUMENTATION, KONG, OPERATORS

COLLECTOR_FILE = "otel/collector.yaml"
KONG_FILE = "kong/kong.yaml"


class CatalogError(ValueError):
    """The manifests folder lacks a document the catalog targets."""


@dataclass(frozen=True)
class Target:
    """One mutated document: its file (relative to the manifests folder), every document of that file, and which
    of them (and where inside it) the operators mutate."""

    name: str                 # collector | kong | instrumentation
    file: str
    documents: tuple[Any, ...]
    index: int                # which document of the file
    config_key: tuple[str, ...] = ()  # the path inside it the operators see (collector: spec.config)

    def subject(self) -> Any:
        node = self.documents[self.index]
        for key in self.config_key:
            node = node[key]
        return node

    def with_subject(self, subject: Any) -> list[Any]:
        """Every document of the file, the target's part replaced by ``subject``."""
        documents = list(self.documents)
        if not self.config_key:
            documents[self.index] = subject
            return documents
        import copy

        doc = copy.deepcopy(documents[self.index])
        node = doc
        for key in self.config_key[:-1]:
            node = node[key]
        node[self.config_key[-1]] = subject
        documents[self.index] = doc
        return documents


@dataclass(frozen=True)
class Mutant:
    operator: str
    target: str
    file: str
    path: str
    description: str
    documents: tuple[Any, ...]   # the whole mutated file

    @property
    def id(self) -> str:
        """Stable across runs: operator, file and the path inside the document."""
        return f"{self.operator}:{self.file}:{self.path}"

    def text(self) -> str:
        return yaml.safe_dump_all(list(self.documents), sort_keys=False)

    def write_into(self, manifests: Path) -> Path:
        """Write the mutated file into a (copied) manifests folder; return its path."""
        path = Path(manifests) / self.file
        path.write_text(self.text())
        return path


def _load_all(path: Path) -> tuple[Any, ...]:
    try:
        return tuple(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from exc


def find_instrumentation(manifests: Path) -> tuple[str, int]:
    """The file (relative) and document index of the folder's Instrumentation resource."""
    for path in sorted(Path(manifests).rglob("*.y*ml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue
        for index, doc in enumerate(docs):
            if isinstance(doc, dict) and doc.get("kind") == "Instrumentation":
                return path.relative_to(manifests).as_posix(), index
    raise CatalogError(f"no Instrumentation resource under {manifests}")


def targets(manifests: Path) -> dict[str, Target]:
    manifests = Path(manifests)
    collector_docs = _load_all(manifests / COLLECTOR_FILE)
    found = [i for i, d in enumerate(collector_docs)
             if isinstance(d, dict) and d.get("kind") == "OpenTelemetryCollector"]
    if len(found) != 1:
        raise CatalogError(f"{COLLECTOR_FILE} must hold one OpenTelemetryCollector resource, found {len(found)}")
    instrumentation_file, instrumentation_index = find_instrumentation(manifests)
    return {
        COLLECTOR: Target(COLLECTOR, COLLECTOR_FILE, collector_docs, found[0], ("spec", "config")),
        KONG: Target(KONG, KONG_FILE, _load_all(manifests / KONG_FILE), 0),
        INSTRUMENTATION: Target(INSTRUMENTATION, instrumentation_file,
                                _load_all(manifests / instrumentation_file), instrumentation_index),
    }


def generate(manifests: Path, only: Iterable[str] = ()) -> list[Mutant]:
    """Every mutant of the folder, in a stable order (operators as registered, then document order); ``only``
    restricts to the named operators (an unknown name is a ValueError listing the known ones)."""
    wanted = list(only) or list(OPERATORS)
    if unknown := [name for name in wanted if name not in OPERATORS]:
        raise ValueError(f"unknown mutation operator(s) {unknown}; known: {sorted(OPERATORS)}")
    found = targets(manifests)
    mutants: list[Mutant] = []
    for name in wanted:
        op = OPERATORS[name]
        target = found[op.target]
        for mutation in op.generate(target.subject()):
            mutants.append(Mutant(op.name, op.target, target.file, mutation.path, mutation.description,
                                  tuple(target.with_subject(mutation.document))))
    ids = [m.id for m in mutants]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise AssertionError(f"mutant ids must be unique: {duplicates}")
    return mutants


def sample(mutants: Sequence[Mutant], n: int) -> list[Mutant]:
    """``n`` mutants spread over operators and files (round robin over operators, first mutants first):
    deterministic, so a CI sample is the same on every run."""
    by_operator: dict[str, list[Mutant]] = {}
    for mutant in mutants:
        by_operator.setdefault(mutant.operator, []).append(mutant)
    picked: list[Mutant] = []
    round_ = 0
    while len(picked) < min(n, len(mutants)):
        for group in by_operator.values():
            if round_ < len(group) and len(picked) < n:
                picked.append(group[round_])
        round_ += 1
    return picked


def copy_manifests(src: Path, dst: Path) -> Path:
    """A private copy of the manifests folder (lint reads the whole folder; one mutated file is written in)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst
