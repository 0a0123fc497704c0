"""JSON Schema export of every method's params and result and every notification."""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from .methods import METHODS, NOTIFICATIONS


def json_schema() -> dict[str, Any]:
    """One document: ``methods`` and ``notifications`` refer into shared ``$defs``."""
    types: list[Any] = []
    for spec in METHODS.values():
        types += [spec.params, spec.result]
    types += list(NOTIFICATIONS.values())
    refs, defs = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    refs_iter = iter(refs)
    methods = {
        name: {"params": next(refs_iter), "result": next(refs_iter)} for name in METHODS
    }
    notifications = {name: {"params": next(refs_iter)} for name in NOTIFICATIONS}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "exec protocol v1",
        "methods": methods,
        "notifications": notifications,
        "$defs": _clean_descriptions(defs),
    }


def _clean_descriptions(node: Any) -> Any:
    """Docstring descriptions with their indentation removed.

    msgspec 0.22 dedents a struct's docstring and 0.23 keeps it as written; cleaning it
    here keeps the exported schema the same whichever msgspec is installed.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def json_schema_text() -> str:
    text = msgspec.json.format(msgspec.json.encode(json_schema()), indent=2)
    return text.decode() + "\n"
