"""The events of one process's sequence, as both the daemon and the client see them."""

from __future__ import annotations

from typing import Literal

import attrs

StreamName = Literal["stdout", "stderr", "pty"]


@attrs.frozen(slots=True)
class Output:
    """A chunk of output on one stream."""

    seq: int
    stream: StreamName
    data: bytes


@attrs.frozen(slots=True)
class Exited:
    """The process exited: the OS code, or 128+N for death by signal N."""

    seq: int
    exit_code: int
    sandbox_denied: bool = False


@attrs.frozen(slots=True)
class Closed:
    """Both streams ended and the exit is known. Always the last seq."""

    seq: int


@attrs.frozen(slots=True)
class Failed:
    """Client side only: the sequence cannot be completed. Terminal; carries no seq."""

    message: str


SeqEvent = Output | Exited | Closed
"""An event that carries a seq on the wire."""

Event = Output | Exited | Closed | Failed
"""What ``ProcessHandle.events()`` yields."""


def event_size(event: SeqEvent) -> int:
    """The bytes an event holds, for buffer bounds."""
    return len(event.data) if isinstance(event, Output) else 0
