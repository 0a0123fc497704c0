"""Daemon configuration (attrs; the CLI builds it, embedders construct it directly)."""

from __future__ import annotations

from typing import Any

import attrs

from ._core.sequence import DEFAULT_RETAIN_BYTES, DEFAULT_RETAIN_CHUNKS


def _not_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Everything ``exec-runtime serve`` can be told. All times are seconds."""

    listen: str = "ws://127.0.0.1:0"
    retain_bytes: int = attrs.field(default=DEFAULT_RETAIN_BYTES, validator=_not_negative)
    retain_chunks: int = attrs.field(default=DEFAULT_RETAIN_CHUNKS, validator=_not_negative)
    closed_ttl: float = attrs.field(default=30.0, validator=_not_negative)
    detached_ttl: float = attrs.field(default=30.0, validator=_not_negative)
    max_message_bytes: int = 64 * 1024 * 1024
    outbox_frames: int = 8
    """Frames queued per connection before notifications apply backpressure."""
    shutdown_grace: float = 2.0
    """After SIGTERM to every process group, how long before SIGKILL."""
    start_delay: float = 0.0
    """Test hook: hold each process/start in the starting state this long."""
