"""Validate a custom resource offline against its CRD's structural ``openAPIV3Schema``, as the API server does.

What the API server enforces from a structural schema, and so what this checks: unknown fields (the server prunes
them, and rejects them under ``fieldValidation=Strict`` -- kubectl's default), ``type`` (with ``nullable`` and
``x-kubernetes-int-or-string``), ``required``, ``enum``, ``pattern``, ``format`` is not checked, lengths, item counts
and ``minimum``/``maximum``; ``x-kubernetes-preserve-unknown-fields`` keeps a subtree open (the collector's
``spec.config`` components are such a subtree). Not checked: CEL rules (``x-kubernetes-validations``), which need
the API server; tests/test_controlplane.py compares these findings with the real server's verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,),
                                       "integer": (int,), "number": (int, float), "boolean": (bool,)}


def validate(obj: Any, schema: dict[str, Any]) -> list[str]:
    """Every violation as ``<path>: <problem>`` (empty = valid). ``apiVersion``/``kind``/``metadata`` are the
    server's own; the schema's say nothing the server would check beyond ``type: object``."""
    return list(_check(obj, schema, ""))


def _check(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    where = path or "(root)"
    if value is None:
        if not schema.get("nullable"):
            yield f"{where}: null is not allowed"
        return
    if not _type_ok(value, schema):
        yield f"{where}: expected {_type_name(schema)}, got {_json_type(value)} {_short(value)}"
        return
    for combinator in ("allOf",):
        for sub in schema.get(combinator) or []:
            yield from _check_values_only(value, sub, path)
    if isinstance(value, dict):
        yield from _check_object(value, schema, path)
    elif isinstance(value, list):
        yield from _check_array(value, schema, path)
    else:
        yield from _check_scalar(value, schema, where)


def _check_values_only(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    """allOf branches in a structural schema carry value validations only (no properties of their own)."""
    if isinstance(value, dict | list):
        return
    yield from _check_scalar(value, schema, path or "(root)")


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> Iterator[str]:
    properties: dict[str, Any] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    open_subtree = bool(schema.get("x-kubernetes-preserve-unknown-fields")
                        or schema.get("x-kubernetes-embedded-resource"))
    for key in schema.get("required") or []:
        if key not in value:
            yield f"{_join(path, key)}: Required value"
    for key, item in value.items():
        child = _join(path, key)
        if not path and key in ("apiVersion", "kind", "metadata"):
            continue
        if key in properties:
            yield from _check(item, properties[key], child)
        elif isinstance(additional, dict):
            yield from _check(item, additional, child)
        elif additional is True or open_subtree:
            continue
        else:
            yield f'{child}: unknown field "{child}"'
    for bound, test, text in (("minProperties", lambda n, b: n >= b, "at least"),
                              ("maxProperties", lambda n, b: n <= b, "at most")):
        if bound in schema and not test(len(value), schema[bound]):
            yield f"{path or '(root)'}: must have {text} {schema[bound]} properties"


def _check_array(value: list[Any], schema: dict[str, Any], path: str) -> Iterator[str]:
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            yield from _check(item, items, f"{path}[{index}]")
    if "minItems" in schema and len(value) < schema["minItems"]:
        yield f"{path}: must have at least {schema['minItems']} items"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        yield f"{path}: must have at most {schema['maxItems']} items"


def _check_scalar(value: Any, schema: dict[str, Any], where: str) -> Iterator[str]:
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        yield f"{where}: Unsupported value: {_short(value)}: supported values: {', '.join(map(repr, enum))}"
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            yield f"{where}: {_short(value)} does not match {schema['pattern']!r}"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield f"{where}: longer than {schema['maxLength']} characters"
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield f"{where}: shorter than {schema['minLength']} characters"
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            yield f"{where}: {value} is less than the minimum {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            yield f"{where}: {value} is greater than the maximum {schema['maximum']}"


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    wanted = schema.get("type")
    if not wanted:
        return True
    if isinstance(value, bool) and wanted != "boolean":
        return False
    if wanted == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(str(wanted), (object,)))


def _type_name(schema: dict[str, Any]) -> str:
    return "integer or string" if schema.get("x-kubernetes-int-or-string") else str(schema.get("type"))


def _json_type(value: Any) -> str:
    for name, types in (("boolean", (bool,)), ("integer", (int,)), ("number", (float,)), ("string", (str,)),
                        ("object", (dict,)), ("array", (list,))):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
