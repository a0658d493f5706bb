"""Where two configs (parsed YAML: dicts, lists, scalars) differ: the one diff behind "derived = manifest changed
only at its documented rewrites" for Kong's declarative config and the collector's config.

A list item that is a mapping with a string ``name`` is matched by that name (``services[coupon]``), any other item
by its index, so a reordered list of named entities is no change and a renamed one is a removal plus an addition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PathPart = str | int


@dataclass(frozen=True)
class Change:
    """One place where ``after`` differs from ``before``: a changed leaf, or a key / list item only one side has
    (``after`` is None when it was removed)."""

    path: tuple[PathPart, ...]     # dict keys, list item names, list indexes
    dotted: str                    # the same path for people: services[coupon].url, pipelines.metrics.processors[2]
    after: Any


def changes(before: Any, after: Any) -> list[Change]:
    """Every :class:`Change` from ``before`` to ``after``, in a stable order (keys sorted)."""
    found: list[Change] = []
    _walk(before, after, (), "", found)
    return found


def _list_key(item: Any, index: int) -> PathPart:
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return str(item["name"])
    return index


def _walk(before: Any, after: Any, path: tuple[PathPart, ...], dotted: str, found: list[Change]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            sub, sub_dotted = (*path, key), f"{dotted}.{key}" if dotted else str(key)
            if key in before and key in after:
                _walk(before[key], after[key], sub, sub_dotted, found)
            else:
                found.append(Change(sub, sub_dotted, after.get(key)))
        return
    if isinstance(before, list) and isinstance(after, list):
        left = {_list_key(item, i): item for i, item in enumerate(before)}
        right = {_list_key(item, i): item for i, item in enumerate(after)}
        for key in sorted(set(left) | set(right), key=str):
            sub, sub_dotted = (*path, key), f"{dotted}[{key}]"
            if key in left and key in right:
                _walk(left[key], right[key], sub, sub_dotted, found)
            else:
                found.append(Change(sub, sub_dotted, right.get(key)))
        return
    if before != after:
        found.append(Change(path, dotted, after))
