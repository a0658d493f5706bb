"""Trace assertions over normalized spans (see docs/interfaces.md): build the tree, find a trace by the
X-Kong-Request-Id the client saw, assert a service path and completeness, render the tree as text."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from otelgate.expect.errors import Evidence, ExpectationFailed, require

Span = Mapping[str, Any]


@dataclass
class TraceTree:
    """The spans of one or more traces, linked by parent span id."""

    spans: list[Span]
    by_id: dict[str, Span] = field(init=False)
    children: dict[str, list[Span]] = field(init=False)

    def __post_init__(self) -> None:
        self.spans = sorted(self.spans, key=lambda s: (int(s["start_unix_nano"]), s["name"]))
        self.by_id = {s["span_id"]: s for s in self.spans}
        self.children = {}
        for span in self.spans:
            self.children.setdefault(span["parent_span_id"], []).append(span)

    @property
    def trace_ids(self) -> set[str]:
        return {s["trace_id"] for s in self.spans}

    def roots(self) -> list[Span]:
        """Spans whose parent is absent from the tree (the root, plus orphans or an external parent's children)."""
        return [s for s in self.spans if not s["parent_span_id"] or s["parent_span_id"] not in self.by_id]

    def orphans(self, external_parents: Iterable[str] = ()) -> list[Span]:
        """Spans that name a parent that is neither stored nor declared external."""
        allowed = set(external_parents)
        return [s for s in self.spans
                if s["parent_span_id"] and s["parent_span_id"] not in self.by_id
                and s["parent_span_id"] not in allowed]

    def ancestors(self, span: Span) -> list[Span]:
        chain: list[Span] = []
        seen: set[str] = set()
        parent_id = span["parent_span_id"]
        while parent_id and parent_id in self.by_id and parent_id not in seen:
            seen.add(parent_id)
            parent = self.by_id[parent_id]
            chain.append(parent)
            parent_id = parent["parent_span_id"]
        return chain

    def find(self, *, service: str | None = None, kind: str | None = None, name: str | None = None) -> list[Span]:
        return [s for s in self.spans
                if (service is None or s.get("service_name") == service)
                and (kind is None or s.get("kind") == kind)
                and (name is None or s.get("name") == name)]

    def services(self) -> list[str]:
        return sorted({str(s.get("service_name")) for s in self.spans})

    def render(self, mark: Iterable[str] = ()) -> str:
        """The tree as indented text; spans whose id is in ``mark`` get a ``<==`` marker."""
        marked = set(mark)
        lines: list[str] = []

        def walk(span: Span, depth: int) -> None:
            duration_ms = (int(span["end_unix_nano"]) - int(span["start_unix_nano"])) / 1e6
            flag = "  <==" if span["span_id"] in marked else ""
            lines.append(f"{'  ' * depth}{span.get('service_name')} | {span['name']} [{span.get('kind')}] "
                         f"{duration_ms:.1f}ms span={span['span_id']}{flag}")
            for child in self.children.get(span["span_id"], []):
                walk(child, depth + 1)

        for root in self.roots():
            parent = root["parent_span_id"]
            if parent:
                lines.append(f"(parent {parent} not stored)")
            walk(root, 0 if not parent else 1)
        ids = ", ".join(sorted(self.trace_ids)) or "<none>"
        return f"trace(s) {ids}: {len(self.spans)} span(s)\n" + "\n".join(lines)


def kong_root_for_request(spans: Sequence[Span], request_id: str) -> Span | None:
    """The Kong root span whose ``kong.request.id`` equals the X-Kong-Request-Id the client saw."""
    for span in spans:
        if span["name"] == "kong" and span.get("attributes", {}).get("kong.request.id") == request_id:
            return span
    return None


def assert_one_trace(tree: TraceTree) -> None:
    require("spans in the trace", tree.spans)
    if len(tree.trace_ids) != 1:
        raise ExpectationFailed("SPLIT_TRACE", f"expected one trace id, found {len(tree.trace_ids)}", tree.render())


def assert_complete(tree: TraceTree, external_parents: Iterable[str] = ()) -> None:
    """Every parent is present (except declared external parents, e.g. a client's own span)."""
    require("spans in the trace", tree.spans)
    orphans = tree.orphans(external_parents)
    if orphans:
        missing = sorted({s["parent_span_id"] for s in orphans})
        raise ExpectationFailed("MISSING_PARENT", f"parent span(s) not in the trace: {', '.join(missing)}",
                                tree.render(mark=[s["span_id"] for s in orphans]))


def assert_service_path(tree: TraceTree, path: Sequence[str]) -> list[Span]:
    """Each service's SERVER span descends from the previous service's CLIENT span; returns the SERVER spans.

    The first service's entry span is its SERVER root (Kong's ``kong`` span).
    """
    require("services in the path", list(path), minimum=2)
    require("spans in the trace", tree.spans)
    servers = tree.find(service=path[0], kind="SERVER")
    if not servers:
        raise ExpectationFailed("BROKEN_PATH", f"no SERVER span of {path[0]!r}; services seen: {tree.services()}",
                                tree.render(), Evidence(hop=f"-> {path[0]}",
                                                        facts={"services_in_trace": tree.services()}))
    hops = [servers[0]]
    for previous, service in itertools.pairwise(path):
        candidates = tree.find(service=service, kind="SERVER")
        linked = [s for s in candidates if _descends_from_client_of(tree, s, previous)]
        if not linked:
            why = (f"no SERVER span of {service!r}" if not candidates
                   else f"the SERVER span of {service!r} does not descend from a CLIENT span of {previous!r}")
            raise ExpectationFailed("BROKEN_PATH", f"hop {previous} -> {service}: {why}",
                                    tree.render(mark=[s["span_id"] for s in candidates]),
                                    Evidence(hop=f"{previous} -> {service}",
                                             facts={"services_in_trace": tree.services(),
                                                    f"{service}_server_spans_elsewhere": not candidates}))
        hops.append(linked[0])
    return hops


def _descends_from_client_of(tree: TraceTree, span: Span, service: str) -> bool:
    return any(a.get("service_name") == service and a.get("kind") == "CLIENT" for a in tree.ancestors(span))


def assert_kinds(tree: TraceTree, expected: Mapping[str, str]) -> None:
    """``expected`` maps span names to kinds, e.g. ``{"kong": "SERVER", "kong.balancer": "CLIENT"}``."""
    wrong = [f"{s['name']}: {s.get('kind')} (expected {expected[s['name']]})"
             for s in tree.spans if s["name"] in expected and s.get("kind") != expected[s["name"]]]
    missing = [name for name in expected if not tree.find(name=name)]
    if wrong or missing:
        raise ExpectationFailed("WRONG_SPAN_KINDS", "; ".join(wrong + [f"{m}: missing" for m in missing]),
                                tree.render())


def assert_parent(tree: TraceTree, child: Span, parent_name: str) -> None:
    """``child``'s direct parent is a span named ``parent_name``."""
    parent = tree.by_id.get(child["parent_span_id"])
    if parent is None or parent["name"] != parent_name:
        seen = parent["name"] if parent else f"<not stored: {child['parent_span_id'] or 'none'}>"
        raise ExpectationFailed("WRONG_PARENT", f"{child.get('service_name')} {child['name']!r} has parent "
                                f"{seen!r}, expected {parent_name!r}", tree.render(mark=[child["span_id"]]))
