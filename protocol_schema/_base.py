"""The base class every wire struct derives from."""

from __future__ import annotations

import msgspec


class WireStruct(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """camelCase on the wire, unknown fields ignored, defaults omitted when encoding."""
