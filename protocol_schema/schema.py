"""JSON Schema export of every method's params and result and every notification."""

from __future__ import annotations

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
        "$defs": defs,
    }


def json_schema_text() -> str:
    text = msgspec.json.format(msgspec.json.encode(json_schema()), indent=2)
    return text.decode() + "\n"
